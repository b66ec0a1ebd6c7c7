"""Where a conditioning came from, so a swapped wire is refused instead of sampled.

Every real SD1.5 text encoder is 768 wide, so width checks cannot tell the SDM's prompts from
the TDM's, nor ``text`` from ``subject``. The pack therefore marks what it makes:

- the loaders mark the MODEL, the CLIP and the subject encoder they return with
  ``(kind, model name)`` (on objects that ComfyUI's clones share, so LoRA and CLIP-skip
  nodes keep the mark);
- Subject Encode writes ``{"role": "subject" | "text", "sdm": <model name>}`` under
  :data:`KEY` into each conditioning entry's dict.

Stock conditioning nodes copy the entry dicts, so the mark follows them: Set Area / Set Mask
and Combine keep each entry's role; Concat keeps the role of ``conditioning_to``; an entry
whose tensor is all zeros (Conditioning Zero Out) carries no role. Entries without a mark
(stock text encoders) are accepted in any socket: only the pack's own outputs are checked.
"""

from __future__ import annotations

import logging
from typing import Any

from ..facediffuser_core.errors import InputError, ModelError

log = logging.getLogger("facediffuser")

KEY = "facediffuser"  # in a conditioning entry's dict
_ATTRIBUTE = "facediffuser_source"  # on a loaded module: (kind, model name)

SUBJECT, TEXT = "subject", "text"
WIRING = (
    "wire Subject Encode's 'subject' output to 'subject' and its 'text' output to 'text' "
    "(and, if used, a stock text encoding of the scene to 'tdm_text'; any stock encoding to "
    "'negative')"
)


# --------------------------------------------------------------------------- loader marks


def mark(obj: Any, kind: str, name: str) -> None:
    """Record on ``obj`` that it was loaded from model ``name`` by the ``kind`` loader."""
    if obj is not None:
        setattr(obj, _ATTRIBUTE, (kind, name))


def _source(obj: Any) -> tuple[str, str] | None:
    return getattr(obj, _ATTRIBUTE, None) if obj is not None else None


def mark_clip(clip: Any, kind: str, name: str) -> None:
    """Mark a ComfyUI CLIP on its text model, which every ``clip.clone()`` shares."""
    mark(getattr(clip, "cond_stage_model", None), kind, name)


def clip_source(clip: Any) -> tuple[str, str] | None:
    return _source(getattr(clip, "cond_stage_model", None))


def mark_model(model: Any, kind: str, name: str) -> None:
    """Mark a ComfyUI MODEL on its inner model, which every patcher clone shares."""
    mark(getattr(model, "model", None), kind, name)


def model_source(model: Any) -> tuple[str, str] | None:
    return _source(getattr(model, "model", None))


def encoder_source(clip: Any, subject_encoder: Any) -> str | None:
    """The SDM both came from; refuses a CLIP from another checkpoint than the encoder.

    An unmarked CLIP (a stock loader's) is accepted with a warning: it cannot be traced, and
    a standalone copy of the SDM's text encoder is legitimate.
    """
    encoder = _source(subject_encoder)
    text = clip_source(clip)
    encoder_name = encoder[1] if encoder else None
    if text is None:
        log.warning(
            "Face-diffuser: Subject Encode got a CLIP that no Face-diffuser loader made; it "
            "must be the text encoder of the SDM %s, or the subject conditioning is wrong",
            encoder_name or "that the subject encoder comes from",
        )
        return encoder_name
    kind, name = text
    if kind != "sdm":
        raise ModelError(
            f"Subject Encode's clip comes from 'Load Face-diffuser TDM' ({name}): connect the "
            f"'clip' output of the 'Load Face-diffuser SDM' node that gives the subject_encoder"
        )
    if encoder_name is not None and name != encoder_name:
        raise ModelError(
            f"Subject Encode's clip comes from the SDM {name} but its subject_encoder from the "
            f"SDM {encoder_name}: connect both from the same 'Load Face-diffuser SDM' node"
        )
    return name


# --------------------------------------------------------------------------- conditioning


def tag(conditioning: list, role: str, sdm: str | None) -> list:
    """``conditioning`` with ``role`` and the SDM's name in each entry's dict."""
    return [[t, {**d, KEY: {"role": role, "sdm": sdm}}] for t, d in conditioning]


def _marks(conditioning: Any) -> list[dict]:
    """The marks of the entries that carry one (zeroed-out entries carry none)."""
    found = []
    for entry in conditioning or []:
        if not isinstance(entry, (list, tuple)) or len(entry) < 2 or not isinstance(entry[1], dict):
            continue
        info = entry[1].get(KEY)
        tensor = entry[0]
        zeroed = hasattr(tensor, "any") and not bool(tensor.any())
        if isinstance(info, dict) and not zeroed:
            found.append(info)
    return found


def roles(conditioning: Any) -> set[str]:
    return {m.get("role") for m in _marks(conditioning)}


def _sdms(conditioning: Any) -> set[str]:
    return {m["sdm"] for m in _marks(conditioning) if m.get("sdm")}


def check_wiring(negative: Any, text: Any, subject: Any, tdm_text: Any = None, sdm: Any = None):
    """InputError naming the right wiring when a role is in the wrong socket.

    ``sdm`` is the SDM MODEL: a subject conditioning made with another SDM's encoder is
    refused too.
    """
    role_of = {"negative": roles(negative), "text": roles(text), "subject": roles(subject)}
    role_of["tdm_text"] = roles(tdm_text) if tdm_text is not None else set()
    if SUBJECT in role_of["text"] and TEXT in role_of["subject"]:
        raise InputError(f"'text' and 'subject' are swapped: {WIRING}")
    for socket in ("text", "negative", "tdm_text"):
        if SUBJECT in role_of[socket]:
            raise InputError(
                f"'{socket}' carries Subject Encode's 'subject' output (the prompt with the "
                f"people fused in), which only the SDM's 'subject' input reads: {WIRING}"
            )
    if TEXT in role_of["subject"]:
        raise InputError(
            f"'subject' carries Subject Encode's 'text' output (the prompt without the people): "
            f"{WIRING}"
        )
    if TEXT in role_of["negative"]:
        raise InputError(
            "'negative' carries Subject Encode's 'text' output (the prompt itself, which would "
            "cancel the guidance): connect a text encoding of what to avoid (or a Conditioning "
            f"Zero Out) to 'negative'; {WIRING}"
        )
    texts, subjects = _sdms(text), _sdms(subject)
    if texts and subjects and texts != subjects:
        raise InputError(
            f"'text' was encoded for the SDM {', '.join(sorted(texts))} but 'subject' for the SDM "
            f"{', '.join(sorted(subjects))}: take both outputs from the same Subject Encode"
        )
    loaded = model_source(sdm)
    if loaded is not None and loaded[0] == "sdm" and subjects and subjects != {loaded[1]}:
        raise InputError(
            f"'subject' was made with the CLIP and subject encoder of the SDM "
            f"{', '.join(sorted(subjects))}, but the SDM model is {loaded[1]}: connect Subject "
            "Encode's clip and subject_encoder from the 'Load Face-diffuser SDM' node whose "
            "model goes to sdm_model"
        )
