"""The tiny pretrained base that embedded students start from (corpus, pretraining, manifest)."""
