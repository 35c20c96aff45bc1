"""Hyper-parameters of the transfer models, read from TOML.

`transfer/default_config.toml` holds every key and its default; a user file
overrides any subset. The resolved configuration is a plain nested dict
wrapped in `TransferConfig`, so that it can be written into a model bundle as
JSON and read back without loss.
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Mapping

from acquisition.shared.errors import ConfigError
from transfer.preprocess import DEFAULT_SCALING, SCALINGS

__all__ = ["DEFAULT_CONFIG_PATH", "ConfigError", "TransferConfig", "config_from_json", "default_config",
           "load_config", "to_toml"]


DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.toml")


def _default_dict() -> dict[str, Any]:
    values = tomllib.loads(DEFAULT_CONFIG_PATH.read_text("utf-8"))
    values["data"]["scaling"] = DEFAULT_SCALING   # one default, defined with the scaler
    return values


def _check_value(where: str, default: Any, value: Any) -> Any:
    # bool is a subclass of int: check it first so that `epochs = true` is refused.
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if default:
            return [_check_value(f"{where}[{i}]", default[0], v) for i, v in enumerate(value)]
        return list(value)
    raise ConfigError(f"{where}: unsupported default type {type(default).__name__}")


def _merge(defaults: dict[str, Any], override: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    merged = copy.deepcopy(defaults)
    for key, value in override.items():
        path = f"{where}.{key}" if where else key
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ConfigError(f"unknown configuration key '{path}' (known here: {known})")
        if isinstance(defaults[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path}: expected a table, got {value!r}")
            merged[key] = _merge(defaults[key], value, path)
        else:
            merged[key] = _check_value(path, defaults[key], value)
    return merged


# Sane ranges, checked before anything is sized from them (a layer of 10^8 units would ask
# for terabytes). "section.key": (low, high), inclusive; a list's every item is checked; "*"
# stands for every section that has the key. One line per field.
LAYER = (1, 16_384)
RANGES: dict[str, tuple[float, float]] = {
    "vae.hidden": LAYER, "mlp.hidden": LAYER, "vae.latent": (1, 4_096),
    "*.batch_size": (1, 1_000_000), "*.epochs": (0, 100_000), "*.patience": (0, 100_000),
    "*.learning_rate": (1e-12, 10.0), "*.l2": (0.0, 1e3), "*.clip_grad_norm": (0.0, 1e6),
    "*.negative_slope": (0.0, 1.0), "vae.max_epochs": (0, 100_000), "mlp.max_epochs": (0, 100_000),
    "finetune.max_epochs": (0, 100_000), "one_step.max_epochs": (0, 100_000), "vae.kl_max": (0.0, 1e3),
    "vae.kl_cycles": (1, 10_000), "mlp.gain_augment": (0.0, 1.0),
    "data.chunk_spots": (1, 10_000_000), "data.shuffle_buffer_chunks": (1, 100_000),
    "data.in_memory_max_mb": (0, 10_000_000),
    "baselines.max_spots": (1, 100_000_000), "baselines.knn_max_spots": (1, 100_000_000),
    "baselines.pls_components": (1, 10_000), "baselines.pls_components_candidates": (1, 10_000),
    "baselines.knn_neighbors": (1, 10_000), "baselines.ds_rank": (0, 100_000),
    "baselines.pds_half_window": (0, 10_000), "baselines.ridge_alpha": (1e-12, 1e12),
    "baselines.ridge_alpha_candidates": (1e-12, 1e12), "baselines.validation_gain": (0.0, 1.0),
    "baselines.trust_day_change": (0.0, 1.0),
    "kmeans.k_candidates": (2, 10_000), "kmeans.silhouette_spots": (1, 100_000_000),
    "kmeans.max_fit_spots": (1, 100_000_000),
    "search.trials": (1, 100_000), "search.max_epochs": (1, 100_000), "search.reduction_factor": (2, 100),
    "search.vae_first": LAYER, "search.vae_second": LAYER, "search.latent": (1, 4_096),
    "search.mlp_first": LAYER, "search.mlp_second": LAYER, "search.learning_rate": (1e-12, 10.0),
}
MAX_LIST_ITEMS = 64


def _check_ranges(values: Mapping[str, Any]) -> None:
    for section, block in values.items():
        if not isinstance(block, Mapping):
            continue
        for key, value in block.items():
            bounds = RANGES.get(f"{section}.{key}") or RANGES.get(f"*.{key}")
            if bounds is None or isinstance(value, (bool, str)):
                continue
            items = value if isinstance(value, list) else [value]
            if isinstance(value, list) and len(value) > MAX_LIST_ITEMS:
                raise ConfigError(f"{section}.{key}: at most {MAX_LIST_ITEMS} items, got {len(value)}")
            low, high = bounds
            for item in items:
                if not low <= item <= high:
                    raise ConfigError(f"{section}.{key}: {item!r} is outside the sane range {low:g}..{high:g}")


class TransferConfig:
    """Resolved hyper-parameters: `config["vae"]["latent"]` or `config.vae["latent"]`."""

    def __init__(self, values: Mapping[str, Any]):
        self._values = _merge(_default_dict(), values)
        self._validate()

    def _validate(self) -> None:
        for section in ("vae", "mlp"):
            hidden = self._values[section]["hidden"]
            if not hidden or any(h <= 0 for h in hidden):
                raise ConfigError(f"{section}.hidden must be a non-empty list of positive sizes")
        if self._values["vae"]["latent"] <= 0:
            raise ConfigError("vae.latent must be positive")
        for section in ("vae", "mlp", "finetune", "one_step"):
            block = self._values[section]
            if block["batch_size"] <= 0:
                raise ConfigError(f"{section}.batch_size must be positive")
            if block["epochs"] < 0:
                raise ConfigError(f"{section}.epochs must not be negative")
            if block["learning_rate"] <= 0:
                raise ConfigError(f"{section}.learning_rate must be positive")
        if self._values["vae"]["kl_cycles"] <= 0:
            raise ConfigError("vae.kl_cycles must be positive")
        if not 0 < self._values["vae"]["kl_ramp_fraction"] <= 1:
            raise ConfigError("vae.kl_ramp_fraction must be in (0, 1]")
        if self._values["data"]["chunk_spots"] <= 0:
            raise ConfigError("data.chunk_spots must be positive")
        if self._values["data"]["shuffle_buffer_chunks"] <= 0:
            raise ConfigError("data.shuffle_buffer_chunks must be positive")
        if any(a <= 0 for a in self._values["baselines"]["ridge_alpha_candidates"]):
            raise ConfigError("baselines.ridge_alpha_candidates must be positive")
        if self._values["data"]["scaling"] not in SCALINGS:
            raise ConfigError(f"data.scaling must be one of {', '.join(SCALINGS)}, "
                              f"got {self._values['data']['scaling']!r}")
        _check_ranges(self._values)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self._values[section]

    def __getattr__(self, section: str) -> dict[str, Any]:
        try:
            return self.__dict__["_values"][section]
        except KeyError:
            raise AttributeError(section) from None

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._values)

    def to_json(self) -> str:
        return json.dumps(self._values, indent=2, sort_keys=True)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "TransferConfig":
        return TransferConfig(_merge(self._values, overrides))

    def with_max_epochs(self, max_epochs: int | None) -> "TransferConfig":
        """Caps every training phase at `max_epochs` (for quick runs), the epochs that
        `min_steps` adds on small maps included."""
        if max_epochs is None:
            return self
        if max_epochs < 1:
            raise ConfigError(f"--max-epochs must be at least 1, got {max_epochs}")
        caps = {}
        for section in ("vae", "mlp", "finetune", "one_step"):
            block = self._values[section]
            caps[section] = {"epochs": min(block["epochs"], max_epochs),
                             "max_epochs": min(block["max_epochs"] or max_epochs, max_epochs)}
        return self.with_overrides(caps)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransferConfig) and self._values == other._values

    def __repr__(self) -> str:
        return f"TransferConfig({self._values!r})"


def default_config() -> TransferConfig:
    return TransferConfig({})


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TransferConfig:
    """Defaults, then the TOML file at `path` (if any), then `overrides`."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}") from None
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {str(exc)[:200]}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None
        try:
            config = TransferConfig(values)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    else:
        config = TransferConfig(values)
    if overrides:
        config = config.with_overrides(overrides)
    return config


def config_from_json(text: str) -> TransferConfig:
    try:
        values = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(values, Mapping):
        raise ConfigError(f"expected a JSON object of sections, got {type(values).__name__}")
    return TransferConfig(values)


def to_toml(values: Mapping[str, Any]) -> str:
    """Writes a two-level config dict as TOML (the standard library only reads TOML)."""
    lines: list[str] = []
    for section, block in values.items():
        lines.append(f"[{section}]")
        for key, value in block.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} as TOML")
