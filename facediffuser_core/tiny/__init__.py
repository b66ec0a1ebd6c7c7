"""Tiny random-weight models in the real file formats, for tests and the offline default:
``weights`` (the published layout, random weights), ``diffusion`` (the TDM/SDM set, tokenizer,
CLIP), ``faces`` (insightface packs), ``stock``
(a stock SD1.5-layout checkpoint)."""

# The dtypes a full-size set can be written in (see .weights): torch-free, for the CLI's options.
PRECISIONS = ("fp16", "published", "fp32")
