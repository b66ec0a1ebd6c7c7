"""The sampling engine: plain PyTorch, no ComfyUI, no application imports.

``stages`` (which model denoises at which step), ``snf`` (saliency-guided fusion of the two
noise predictions), ``sampling`` (the three-stage TDM -> SNF -> SDM loop), ``schedulers``,
``overlap`` (the two UNets run concurrently), ``presets`` and ``regions`` (where fusion may
act).
"""
