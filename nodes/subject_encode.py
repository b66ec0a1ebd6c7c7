"""Subject Encode: prompt with <|image|> markers + reference people -> SDM conditioning."""

from __future__ import annotations

import torch

from ..facediffuser_core.errors import ModelError
from ..facediffuser_core.node_names import PROMPT, SUBJECT_ENCODE
from ..facediffuser_core.subject.encode import encode_subject
from ..facediffuser_core.subject.prompt import parse_prompt, require_subjects
from ..facediffuser_core.subject.reference import CLIP_MEAN, CLIP_STD
from ..facediffuser_core.subject.text import encoder_for, special_ids
from . import provenance
from .form import number, output, schema
from .people import people_in_order
from .people_input import LEGACY_INPUTS, people_by_position, people_inputs, people_problem
from .types import Subject
from .v3 import advanced, io

PERSON_TIP = (
    "Reference photo(s) of a person: the i-th person binds the i-th <|image|> marker of the "
    "prompt. A batch is several photos of this person (their embeddings are averaged). "
    "Face-centred crops work best (the SDM was trained on them)."
)


def _hf_tokenizer(clip):
    sd1 = getattr(clip.tokenizer, "clip_l", None)
    if sd1 is None or not hasattr(sd1, "tokenizer"):
        raise ModelError(
            "this CLIP is not an SD1.5 text encoder (no CLIP-L tokenizer): connect the CLIP "
            "output of 'Load Face-diffuser SDM' (SDXL/Flux text encoders cannot be used)"
        )
    return sd1.tokenizer


class SubjectEncode(io.ComfyNode):
    """Binds each reference person to the word before its marker (FastComposer-style)."""

    LEGACY_INPUTS = LEGACY_INPUTS

    @classmethod
    def define_schema(cls):
        return schema(
            node_id=SUBJECT_ENCODE,
            description="Write <|image|> right after the word for each person ('a man <|image|> "
            "and a woman <|image|> at the beach'); person_1 binds the first marker, person_2 the "
            "second. An image batch on a person input is several photos of that person: the "
            "person's embedding is the mean of the photos' projected image embeddings, taken "
            "before post-fusion. Prompt weighting syntax is not interpreted here.",
            search_aliases=["FastComposer", "PhotoMaker-like", "identity", "multi-person", "face"],
            inputs=[
                io.Clip.Input("clip", tooltip="The SDM's CLIP (from 'Load Face-diffuser SDM')."),
                Subject.Input("subject_encoder", tooltip="From 'Load Face-diffuser SDM'."),
                io.String.Input(
                    PROMPT,
                    multiline=True,
                    default="a man <|image|> and a woman <|image|> at the beach",
                    tooltip="Prompt with one <|image|> directly after the word naming each "
                    "person (1 to 4).",
                ),
                *people_inputs(PERSON_TIP),
                number(
                    "object_resolution",
                    "Square size references are padded and resized to before CLIP's 224 (the "
                    "reference implementation uses 512).",
                    optional=True,
                    **advanced(),
                ),
            ],
            outputs=[
                output(
                    io.Conditioning,
                    "subject",
                    "SDM conditioning: the prompt with the reference people fused into the "
                    "bound words.",
                ),
                output(
                    io.Conditioning,
                    "text",
                    "The prompt with the markers removed: the TDM's positive and the SDM's "
                    "unconditional.",
                ),
                output(
                    io.Image,
                    "reference_crops",
                    "What the image encoder saw: every photo of every person, in person order, "
                    "padded to a square and resized.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, **given):
        return people_problem(given) or True

    @classmethod
    def execute(cls, clip, subject_encoder, prompt, object_resolution=512, **people):
        references = people_in_order(*people_by_position(people))
        parsed = parse_prompt(prompt)
        require_subjects(parsed, len(references))  # before any model work
        sdm = provenance.encoder_source(clip, subject_encoder)  # one SDM for both
        tokenizer = _hf_tokenizer(clip)

        def encode_text(chunks):
            # Our own chunks, so the bound positions are exact (ComfyUI's word-aware
            # chunking and weight syntax would move them).
            tokens = {"l": [[(t, 1.0) for t in chunk] for chunk in chunks.chunks]}
            return clip.encode_from_tokens(tokens, return_pooled=True)

        encoding = encode_subject(
            parsed,
            references,
            tokenize=encoder_for(tokenizer),
            special=special_ids(tokenizer),
            encode_text=encode_text,
            subject_encoder=subject_encoder,
            object_resolution=object_resolution,
        )
        extra = {"pooled_output": encoding.pooled}
        return io.NodeOutput(
            provenance.tag([[encoding.subject, extra]], provenance.SUBJECT, sdm),
            provenance.tag([[encoding.text, dict(extra)]], provenance.TEXT, sdm),
            shown_crops(encoding.crops),
        )


def shown_crops(crops: torch.Tensor) -> torch.Tensor:
    """CLIP-normalised (N, 3, H, W) crops -> (N, H, W, 3) IMAGE in [0, 1], as the tower saw."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (crops * std + mean).clamp(0, 1).permute(0, 2, 3, 1).contiguous()
