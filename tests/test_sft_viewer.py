"""The SFT mask viewer: a self-contained page, checked in headless Chromium (screenshot + a filter click)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualdistill.cli import app
from dualdistill.format.trajectory import CODE_TO_TEXT, executor_block

RECORDS = [
    {"id": "a", "problem": "Compute 2*3.", "case": "right", "first_teacher": "code",
     "text": "<code>\nprint(2*3)\n</code>" + executor_block("6") + "<answer>\\boxed{6}</answer>"},
    {"id": "b", "problem": "Compute 2+3.", "case": "right", "first_teacher": "text",
     "text": "<think>2+3=5 <b>&</think>\n<answer>\\boxed{5}</answer>"},
    {"id": "c", "problem": "Compute 7-3.", "case": "wrong-right", "first_teacher": "code",
     "text": "<code>\nprint(7/0)\n</code>" + executor_block("Traceback (most recent call last):\nZeroDivisionError")
     + CODE_TO_TEXT + "\n<think>7-3=4</think>\n<answer>\\boxed{4}</answer>"},
]  # fmt: skip


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny_model_dir) -> Path:
    d = tmp_path_factory.mktemp("view")
    data = d / "composed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = d / "view.html"
    res = CliRunner().invoke(
        app, ["view", str(data), "--tokenizer", str(tiny_model_dir), "--out", str(out), "template=compact"]
    )
    assert res.exit_code == 0, res.output
    return out


def test_page_is_self_contained_and_escaped(page):
    html = page.read_text()
    assert "<script src" not in html and "<link" not in html and "http" not in html.split("<body>")[0]
    assert "<b>" not in html and "&lt;" in html and "&amp;" in html, "trajectory text is escaped"
    assert html.count('class="ex"') == 3
    assert 'class="t k-transition"' in html and 'class="m k-executor"' in html
    assert 'class="t k-executor"' not in html, "no executor token is trained (tags are added tokens here)"


def _driver():
    if not shutil.which("chromedriver") or not Path("/usr/bin/chromium").exists():
        pytest.skip("needs chromium and chromedriver (Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(options=opts, service=service)


def test_page_in_headless_chromium(page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = _driver()
    try:
        driver.set_window_size(1200, 900)
        driver.get(page.as_uri())
        counts = driver.find_element(By.ID, "counts")
        assert counts.get_attribute("data-shown") == "3"
        assert "showing 3 of 3" in counts.text
        trained = driver.find_elements(By.CSS_SELECTOR, "span.t")
        masked = driver.find_elements(By.CSS_SELECTOR, "span.m")
        assert trained and masked
        # Trained and masked tokens look different on screen.
        t_style = (
            trained[0].value_of_css_property("font-weight"),
            trained[0].value_of_css_property("opacity"),
        )
        m_style = (masked[0].value_of_css_property("font-weight"), masked[0].value_of_css_property("opacity"))
        assert t_style != m_style
        shot = tmp_path / "view.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000

        Select(driver.find_element(By.ID, "case")).select_by_value("wrong-right")
        assert counts.get_attribute("data-shown") == "1"
        visible = [e for e in driver.find_elements(By.CSS_SELECTOR, ".ex") if e.is_displayed()]
        assert len(visible) == 1 and "#c" in visible[0].text
        Select(driver.find_element(By.ID, "case")).select_by_value("*")
        Select(driver.find_element(By.ID, "teacher")).select_by_value("text")
        assert counts.get_attribute("data-shown") == "1" and "showing 1 of 3" in counts.text
    finally:
        driver.quit()
