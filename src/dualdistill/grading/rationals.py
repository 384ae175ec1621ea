"""Exact comparison of exact numbers, the guard in front of math-verify's float tolerance.

math-verify compares numbers with a float tolerance, so it accepts ``1/2004!`` for ``1/2006!`` and
``1/2^{99}`` for ``1/2^{98}`` (its issue #14): both are nearly 0. ``exact_rationals`` decides such pairs
exactly and leaves everything else (decimals, roots, pi, symbols, expressions too costly to evaluate) to
math-verify by returning None.
"""

from __future__ import annotations


def exact_rationals(g: list, p: list) -> bool | None:
    """Two exact rational numbers compare exactly; None for anything else (math-verify decides).

    math-verify compares numbers with a float tolerance, so it accepts ``1/2004!`` for ``1/2006!`` and
    ``1/2^{99}`` for ``1/2^{98}`` (its issue #14): both are nearly 0. A value sympy holds as an exact
    Rational (integers, fractions, powers and factorials of them) has one right answer.
    """
    if not g or not p:
        return None
    a, b = _as_rational(g[0]), _as_rational(p[0])
    if a is None or b is None:
        return None
    return bool(a == b)


def _as_rational(x):
    """``x`` as an exact sympy Rational when it is one and cheap to evaluate, else None.

    Cheap: every exponent is an integer literal of at most 10,000 and every factorial argument at most
    10,000, so a power tower (math-verify #65) is never expanded here.
    """
    import sympy

    if not isinstance(x, sympy.Basic) or x.free_symbols or not x.is_number:
        return None
    for node in sympy.preorder_traversal(x):
        if isinstance(node, sympy.Pow) and not (
            isinstance(node.exp, sympy.Integer) and abs(node.exp) <= 10_000
        ):
            return None
        if isinstance(node, sympy.factorial) and not (
            isinstance(node.args[0], sympy.Integer) and 0 <= node.args[0] <= 10_000
        ):
            return None
        if isinstance(node, sympy.Float | sympy.NumberSymbol) or (
            node.is_Function and not isinstance(node, sympy.factorial)
        ):
            return None  # decimals keep math-verify's rounding; pi, sqrt, sin: not rationals
    value = x.doit()
    return value if isinstance(value, sympy.Rational) else None
