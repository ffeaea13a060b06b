"""One-file checkpoints: weights, model config, template and provenance.

Loaded with ``torch.load(weights_only=True)``, so a checkpoint can hold only
tensors and plain data, never code. Every failure names the file and the cause.
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from pathlib import Path

import torch

from .errors import CheckpointError
from .model import GLVD, ModelConfig
from .topology import Template

FORMAT = "glvd-checkpoint"
VERSION = 1
DEFAULT_NAME = "glvd_face.pt"


def default_checkpoint_path() -> Path:
    """The checkpoint shipped inside the package."""
    return Path(__file__).resolve().parent / "weights" / DEFAULT_NAME


def save_checkpoint(path: str | os.PathLike, model: GLVD, provenance: dict | None = None,
                    half: bool = False) -> Path:
    """Write ``model`` to ``path`` atomically (a partial file never replaces a good one). ``half``: store the
    floating-point weights as float16 (half the file; loading casts them back to the model's float32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = dict(provenance or {})
    prov.setdefault("saved", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    if half:
        prov["stored_as"] = "float16"
    store = (lambda v: v.half() if v.is_floating_point() else v) if half else (lambda v: v)  # noqa: E731
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "state_dict": {k: store(v.detach().cpu()) for k, v in model.state_dict().items()},
        "template": model.template.to_tensors(),
        "provenance": prov,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read and validate the raw checkpoint dict (no model built)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt zips
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or corrupt?): {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a GLVD checkpoint (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}, this runtime reads {VERSION}")
    for key in ("config", "state_dict", "template", "provenance"):
        if key not in payload:
            raise CheckpointError(f"{path} lacks '{key}'")
    return payload


def load_checkpoint(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> tuple[GLVD, dict]:
    """Build the model from a checkpoint file.

    Returns:
        ``(model in eval mode on device, provenance dict)``.
    """
    path = Path(path) if path is not None else default_checkpoint_path()
    payload = read_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(payload["config"])
        template = Template.from_tensors(payload["template"])
    except (TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{path} has a config or template this runtime does not understand: {exc}") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sparse CSR "beta" notice
        model = GLVD(cfg, template)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the model: {str(exc).splitlines()[0]}") from exc
    prov = dict(payload["provenance"])
    prov["path"] = str(path)
    if isinstance(prov.get("finetuned_heads"), dict):  # one fine-tune, saved before they became a list
        prov["finetuned_heads"] = [prov["finetuned_heads"]]
    return model.to(device).eval(), prov


def write_untrained_checkpoint(path: str | os.PathLike, kit_path: str | os.PathLike | None = None,
                               config: ModelConfig | None = None, seed: int = 0) -> Path:
    """A randomly initialised model, clearly marked ``trained: False``. For tests and plumbing only."""
    from .topology import load_kit, template_from_kit

    torch.manual_seed(seed)
    template = template_from_kit(load_kit(kit_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = GLVD(config or ModelConfig(), template)
    return save_checkpoint(path, model, {"trained": False, "note": "UNTRAINED: random weights, for tests only"})
