"""Model weights: reading files, key layouts (diffusers / LDM), configs, building models,
conversion to the pack's folder format, and finding model files on disk."""
