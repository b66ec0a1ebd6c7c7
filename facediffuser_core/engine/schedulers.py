"""Diffusers schedulers with Stable Diffusion 1.5's noise schedule, built without a download.

SNF acts on noise predictions, so any epsilon scheduler works; DDIM is the paper's.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError

# runwayml/stable-diffusion-v1-5 scheduler_config.json, written out so nothing is fetched.
SD15_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}

# name -> (diffusers class name, extra config)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}),
    "pndm": (
        "PNDMScheduler",
        {"skip_prk_steps": True, "set_alpha_to_one": False, "steps_offset": 1},
    ),
    "euler": ("EulerDiscreteScheduler", {"steps_offset": 1}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {"steps_offset": 1}),
    "heun": ("HeunDiscreteScheduler", {"steps_offset": 1}),
    "lms": ("LMSDiscreteScheduler", {"steps_offset": 1}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"steps_offset": 1}),
    "unipc": ("UniPCMultistepScheduler", {"steps_offset": 1}),
}


def make_scheduler(name: str = "ddim") -> Any:
    """A fresh diffusers scheduler ``name`` with SD1.5's betas (epsilon prediction)."""
    if name not in SCHEDULERS:
        raise InputError(f"unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}")
    import diffusers

    class_name, extra = SCHEDULERS[name]
    return getattr(diffusers, class_name)(**SD15_SCHEDULE, **extra)
