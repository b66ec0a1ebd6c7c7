"""The doctor's vocabulary: a report line (:class:`Check`), what was probed
(:class:`Environment`), and the tables the checks judge against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OK, WARN, FAIL = "ok", "warn", "fail"
SECTIONS = ("Python & torch", "onnxruntime", "insightface", "Model files")

ORT_CPU, ORT_GPU = "onnxruntime", "onnxruntime-gpu"
ORT_DISTRIBUTIONS = (
    ORT_CPU,
    ORT_GPU,
    "onnxruntime-directml",
    "onnxruntime-silicon",
    "onnxruntime-openvino",
)
CUDA_PROVIDER = "CUDAExecutionProvider"
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"

SMALL_MODEL_BYTES = 100_000_000
PUBLISHED_SIZES = {"SDM": "4.5 GB", "TDM": "3.9 GB"}
PARTIAL_SUFFIXES = (".part", ".crdownload", ".incomplete", ".partial", ".download")


PIP_NAMES = {"cv2": "opencv-python", "skimage": "scikit-image", "sklearn": "scikit-learn"}

# A one-node ONNX model (Identity, opset 11) to see whether the CUDA provider really starts.
_IDENTITY_ONNX = (
    b'\x08\x06:7\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x01gZ\x0f\n\x01x\x12\n\n\x08\x08\x01'
    b"\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00"
    b"\x10\x0b"
)


@dataclass
class Check:
    """One line of the report; ``fix`` is set for every problem."""

    section: str
    name: str
    status: str  # 'ok' | 'warn' | 'fail'
    detail: str
    fix: str | None = None


@dataclass
class Environment:
    """What :func:`probe_environment` found; tests build one by hand."""

    python_version: str = ""
    python: str = "python"  # the interpreter the fix commands use
    system: str = "Linux"  # platform.system(): Linux, Windows, Darwin
    torch_version: str | None = None
    torch_error: str | None = None
    torch_cuda: str | None = None  # torch.version.cuda: None on +cpu builds
    torch_hip: str | None = None
    cuda_available: bool = False
    cuda_device: str | None = None
    cuda_error: str | None = None
    mps_available: bool = False
    nvidia_driver: bool = False  # nvidia-smi is on PATH
    cuda_visible_devices: str | None = None
    ort_distributions: dict[str, str] = field(default_factory=dict)  # name -> version
    ort_version: str | None = None  # of the importable module
    ort_providers: list[str] = field(default_factory=list)
    ort_error: str | None = None
    ort_cuda_error: str | None = None  # a CUDA session was tried and did not start
    insightface_distribution: str | None = None
    insightface_version: str | None = None
    insightface_error: str | None = None
    insightface_missing_module: str | None = None
    insightface_requires: list[str] = field(default_factory=list)
    numpy_version: str | None = None

    @property
    def windows(self) -> bool:
        return self.system == "Windows"

    @property
    def nvidia(self) -> bool:
        """An NVIDIA GPU is (or should be) usable here."""
        return (self.cuda_available and not self.torch_hip) or self.nvidia_driver
