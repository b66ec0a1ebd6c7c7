"""A stand-in for ComfyUI's ``comfy_api.latest`` (V3 nodes), just the names the pack uses.

``dynamic=True`` is a host like 0.8.0+ (Autogrow, DynamicCombo, search_aliases, advanced);
``dynamic=False`` one like 0.3.48 (none of them).
"""

from __future__ import annotations

import types


class _Input:
    def __init__(self, id, display_name=None, optional=False, tooltip=None, **options):
        self.id, self.display_name, self.optional, self.tooltip = (
            id,
            display_name,
            optional,
            tooltip,
        )
        self.options = options.pop("options", None)
        self.min, self.max = options.pop("min", None), options.pop("max", None)
        self.default = options.pop("default", None)
        self.extra = options


class _Output:
    def __init__(self, id=None, display_name=None, tooltip=None, **extra):
        self.id, self.display_name, self.tooltip = id, display_name, tooltip


def _type(name: str):
    return type(name, (), {"io_type": name, "Input": _Input, "Output": _Output})


class _NodeOutput:
    def __init__(self, *args, ui=None, **extra):
        self.args, self.ui = args, ui

    @property
    def result(self):
        return self.args


class _ComfyNode:
    hidden = None

    @classmethod
    def define_schema(cls):
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs):
        return True


class _Extension:
    async def get_node_list(self):
        raise NotImplementedError


def make(dynamic: bool) -> dict[str, types.ModuleType]:
    """Modules ``comfy_api`` and ``comfy_api.latest`` for ``sys.modules``."""

    class Schema:  # 0.3.48: no search_aliases
        def __init__(
            self,
            node_id,
            display_name=None,
            category="sd",
            inputs=None,
            outputs=None,
            hidden=None,
            description="",
            is_output_node=False,
        ):
            self.node_id, self.display_name, self.category = node_id, display_name, category
            self.inputs, self.outputs, self.hidden = inputs or [], outputs or [], hidden or []
            self.description, self.is_output_node = description, is_output_node
            self.search_aliases = None

    class AliasSchema(Schema):  # 0.11.0+
        def __init__(self, node_id, search_aliases=None, **fields):
            super().__init__(node_id, **fields)
            self.search_aliases = search_aliases

    def float_init(self, id, advanced=None, **kw):
        _Input.__init__(self, id, **kw)
        self.advanced = advanced

    io = types.SimpleNamespace(
        ComfyNode=_ComfyNode,
        Schema=AliasSchema if dynamic else Schema,
        NodeOutput=_NodeOutput,
        Hidden=types.SimpleNamespace(prompt="PROMPT", unique_id="UNIQUE_ID"),
        Custom=_type,
    )
    for (
        name
    ) in "Int Combo String Boolean Image Mask Latent Model Clip Vae Conditioning Guider".split():
        setattr(io, name, _type(name.upper()))
    io.Float = _type("FLOAT")
    if dynamic:
        io.Float.Input = type("FloatInput", (_Input,), {"__init__": float_init})

        class _TemplateNames:
            def __init__(self, input, names, min=1):
                self.input, self.names, self.min = input, names, min

        class Autogrow:
            TemplateNames = _TemplateNames
            Input = _Input

        class _Option:
            def __init__(self, key, inputs):
                self.key, self.inputs = key, inputs

        class DynamicCombo:
            Option = _Option
            Input = _Input

        def autogrow_input(self, id, template, **kw):
            _Input.__init__(self, id, **kw)
            self.template = template

        Autogrow.Input = type("AutogrowInput", (_Input,), {"__init__": autogrow_input})
        io.Autogrow, io.DynamicCombo = Autogrow, DynamicCombo
    latest = types.ModuleType("comfy_api.latest")
    latest.io, latest.ComfyExtension = io, _Extension
    root = types.ModuleType("comfy_api")
    root.__path__ = []
    root.latest = latest
    return {"comfy_api": root, "comfy_api.latest": latest}
