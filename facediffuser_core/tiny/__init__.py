"""Tiny random-weight models in the real file formats, for tests and the offline default:
``diffusion`` (the TDM/SDM set, tokenizer, CLIP), ``faces`` (insightface packs), ``stock``
(a stock SD1.5-layout checkpoint)."""
