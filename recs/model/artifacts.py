"""Model artefacts: a directory that fully describes one trained DLRM, verified on load.

Layout (``models/<version>/`` under the lakehouse)::

    model.safetensors  weights and normaliser buffers (plain tensors: nothing is unpickled)
    spec.json          the exact FeatureSpec the model was trained with (FeatureSpec.to_json())
    config.json        {"model": DLRM.arch(), "training": <caller's training config>}
    metrics.json       validation metrics / training history
    manifest.json      format + version, spec hash, sha256 and size of each file above

``manifest.json`` is written last, so an interrupted write is refused as incomplete.
Paths may be local, ``file://`` or any URI ``pyarrow.fs`` understands (s3://, gs://, ...).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from recs.errors import ArtifactError
from recs.features.spec import FeatureSpec
from recs.model.dlrm import DLRM
from recs.values import finite_or_none

FORMAT = "recs-dlrm"
FORMAT_VERSION = 1
WEIGHTS, SPEC, CONFIG, METRICS, MANIFEST = (
    "model.safetensors",
    "spec.json",
    "config.json",
    "metrics.json",
    "manifest.json",
)
FILES = (WEIGHTS, SPEC, CONFIG, METRICS)


def _filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a URI; local paths are made absolute."""
    text = str(location)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).resolve())


def _refused(path: str, why: str) -> ArtifactError:
    return ArtifactError(f"model artefact {path}: {why}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(finite_or_none(value), indent=2, sort_keys=True, allow_nan=False) + "\n").encode(
        "utf-8"
    )


def _read(fs: pafs.FileSystem, path: str, name: str) -> bytes:
    try:
        with fs.open_input_stream(f"{path}/{name}") as stream:
            return stream.read()
    except (FileNotFoundError, OSError) as exc:
        raise _refused(path, f"cannot read {name} ({exc})") from None


def save_model(
    model: DLRM,
    location: str | Path,
    *,
    training_config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model`` (with its own spec) as a new artefact directory; returns the manifest.

    Artefacts are immutable: a version names one set of bytes, so a complete artefact (one
    with a manifest) is never replaced. Files left by an interrupted write, which no reader
    accepts, are written over.
    """
    fs, path = _filesystem(location)
    manifest_path = f"{path}/{MANIFEST}"
    if artifact_exists(location):
        raise _refused(path, "already exists; artefacts are written once")
    spec = model.spec
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    contents = {
        WEIGHTS: save_safetensors(tensors, metadata={"format": FORMAT, "spec_hash": spec.spec_hash}),
        SPEC: spec.to_json().encode("utf-8"),
        CONFIG: _json_bytes({"model": model.arch(), "training": dict(training_config or {})}),
        METRICS: _json_bytes(dict(metrics or {})),
    }
    fs.create_dir(path, recursive=True)
    for name, data in contents.items():
        with fs.open_output_stream(f"{path}/{name}") as stream:
            stream.write(data)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec_hash": spec.spec_hash,
        "torch_version": torch.__version__,
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in contents.items()},
    }
    with fs.open_output_stream(manifest_path) as stream:
        stream.write(_json_bytes(manifest))
    return manifest


def artifact_exists(location: str | Path) -> bool:
    """Whether a complete artefact (its manifest, written last) is at ``location``."""
    fs, path = _filesystem(location)
    return fs.get_file_info(f"{path}/{MANIFEST}").type != pafs.FileType.NotFound


def read_manifest(location: str | Path) -> dict[str, Any]:
    """The manifest, after checking format/version and every file's size and sha256."""
    fs, path = _filesystem(location)
    try:
        manifest = json.loads(_read(fs, path, MANIFEST))
    except json.JSONDecodeError as exc:
        raise _refused(path, f"manifest.json is not JSON ({exc})") from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != FORMAT:
        raise _refused(path, f"unknown format {found!r}, want {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise _refused(
            path,
            f"format version {manifest.get('format_version')!r} is not supported "
            f"(this code reads {FORMAT_VERSION})",
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(FILES):
        raise _refused(path, f"manifest must list exactly {sorted(FILES)}")
    return manifest


def _verified(fs: pafs.FileSystem, path: str, manifest: dict[str, Any], name: str) -> bytes:
    data = _read(fs, path, name)
    expected = manifest["files"][name]
    if len(data) != expected.get("bytes") or _sha256(data) != expected.get("sha256"):
        raise _refused(path, f"{name} does not match its manifest hash (tampered or corrupt)")
    return data


def load_model(
    location: str | Path,
    *,
    device: str | torch.device = "cpu",
    expected_spec_hash: str | None = None,
) -> tuple[DLRM, FeatureSpec, dict[str, Any]]:
    """Rebuild a saved model, refusing anything whose files, spec or weights do not check out.

    Returns ``(model in eval mode on device, its FeatureSpec, manifest)``.
    """
    fs, path = _filesystem(location)
    manifest = read_manifest(location)
    data = {name: _verified(fs, path, manifest, name) for name in FILES}
    try:
        spec = FeatureSpec.from_json(data[SPEC].decode("utf-8"))
        arch = json.loads(data[CONFIG])["model"]
    except (KeyError, TypeError, ValueError) as exc:
        raise _refused(path, f"spec.json/config.json unreadable ({exc})") from None
    if spec.spec_hash != manifest.get("spec_hash"):
        raise _refused(path, f"spec.json hash {spec.spec_hash} != manifest's")
    if expected_spec_hash is not None and spec.spec_hash != expected_spec_hash:
        raise _refused(path, f"trained with feature spec {spec.spec_hash}, expected {expected_spec_hash}")
    try:
        model = DLRM(
            spec,
            arch["bottom_mlp"],
            arch["top_mlp"],
            ads_head=bool(arch["ads_head"]),
            linear=bool(arch.get("linear", False)),  # absent: saved before the linear term
        )
        model.load_state_dict(load_safetensors(data[WEIGHTS]), strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise _refused(path, f"weights do not fit config.json/spec.json ({exc})") from None
    return model.to(device).eval(), spec, manifest


def load_json(location: str | Path, name: str) -> Any:
    """``config.json`` or ``metrics.json`` of an artefact, hash-checked against the manifest."""
    if name not in (CONFIG, METRICS, SPEC):
        raise ValueError(f"not an artefact JSON file: {name}")
    fs, path = _filesystem(location)
    return json.loads(_verified(fs, path, read_manifest(location), name))
