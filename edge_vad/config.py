"""The one typed config of edge-vad (TOML). Unknown keys are rejected; errors name the
file, the key path and the bad value. `deploy/edge-vad.toml` is the commented example.

Types are strict (pydantic strict mode): `enabled = "yes"`, `port = "1883"` or `clips = "off"` are
errors, not silently coerced, because a quoted value in TOML is a typo more often than a wish. Only
paths accept a string (TOML has no path type)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Literal, Optional

from typing_extensions import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_vad.compat import remove_prefix
from edge_vad.errors import ConfigError
from edge_vad.review.web import is_loopback_host

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# Strict mode would want a Path object; TOML can only give a string.
PathValue = Annotated[Path, Field(strict=False)]


class SourceConfig(_Strict):
    """One camera or file. `uri`: /dev/video0, csi://0, rtsp://..., http://..., a video file
    or a folder of images."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    uri: str = Field(min_length=1)
    width: Optional[int] = Field(default=None, gt=0)
    height: Optional[int] = Field(default=None, gt=0)
    fps: Optional[float] = Field(default=None, gt=0)
    loop: bool = False
    stride: int = Field(default=1, ge=1, description="run the coarse stage on every Nth frame")
    calibration: Optional[Path] = Field(default=None, description="this camera's folder from `edge-vad calibrate`")


class GateConfig(_Strict):
    """When the coarse score opens the fine stage (hysteresis, minimum length, cool-down)."""

    smoothing_frames: int = Field(default=8, ge=1, description="moving-average window over coarse scores")
    on_threshold: float = Field(default=0.6, gt=0, lt=1)
    off_threshold: float = Field(default=0.4, gt=0, lt=1)
    min_open_s: float = Field(default=1.0, ge=0)
    cooldown_s: float = Field(default=2.0, ge=0)

    @model_validator(mode="after")
    def _hysteresis(self):
        if self.off_threshold > self.on_threshold:
            raise ValueError(
                f"off_threshold ({self.off_threshold}) must not exceed on_threshold ({self.on_threshold})"
            )
        return self


class FineConfig(_Strict):
    enabled: bool = True
    frames_per_update: int = Field(default=16, ge=1, description="frames sampled per fine-stage update")
    pre_roll_s: float = Field(default=2.0, ge=0)
    queue_size: int = Field(default=4, ge=1, description="snippets waiting for the fine worker; more are dropped")


class EventsConfig(_Strict):
    dir: PathValue = Path("events")
    jsonl: bool = True
    stdout: bool = False
    clips: bool = True
    clip_pre_roll_s: float = Field(default=3.0, ge=0)
    clip_pre_roll_mb: float = Field(default=24.0, ge=1, description=(
        "memory bound of the clip pre-roll (raw I420 frames, edge_vad.runtime.preroll): (clip_pre_roll_s + "
        "gate.min_open_s) of frames must fit, at full size and every frame, else every second frame, else shrunk "
        "by an integer factor; 4 s of 640x360 at 30 fps: every frame 41 MiB, every second frame 21 MiB"))
    clip_post_roll_s: float = Field(default=3.0, ge=0)
    snapshots: bool = True
    fail_on_lost_outputs: bool = Field(
        default=True, description="exit 4 at the end of a run that lost a clip, snapshot, event line or report; "
                                  "false: exit 0 (the ERROR lines and /metrics still say so)")


class MqttConfig(_Strict):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, gt=0, lt=65536)
    prefix: str = "edge-vad"
    client_id: Optional[str] = None
    username: Optional[str] = None
    password_file: Optional[PathValue] = None
    keepalive_s: int = Field(default=30, ge=5)
    spool_dir: Optional[PathValue] = Field(default=None, description="events the broker has not acknowledged; "
                                                                     "default: mqtt-spool/ in the events dir")
    spool_max_mb: float = Field(default=16.0, gt=0, description="spool size cap; the oldest events go beyond it")
    home_assistant: bool = Field(default=False, description="announce entities by Home Assistant MQTT discovery")
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    state_interval_s: float = Field(default=1.0, gt=0, description="how often the score sensor is published")


class HttpConfig(_Strict):
    """/healthz, /metrics and the review page. Bound to loopback unless `host` says otherwise; any other
    address needs `token_file` (the page shows cameras and events)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8085, gt=0, lt=65536)
    stalled_after_s: float = Field(default=5.0, gt=0, description="a source without a frame for this long makes "
                                                                  "/healthz answer 503")
    token_file: Optional[PathValue] = Field(default=None, description="file holding the access token (one line)")

    @model_validator(mode="after")
    def _token_off_loopback(self):
        if self.token_file is None and not is_loopback_host(self.host):
            raise ValueError(f"host '{self.host}' is not a loopback address: set token_file (a file holding a long "
                             "random token) so that only its holders see cameras and events, or bind 127.0.0.1")
        return self


class RuntimeConfig(_Strict):
    bundle: Optional[PathValue] = Field(default=None, description="model bundle folder; default: the shipped bundle")
    backend: Optional[str] = Field(default=None, description="force a backend (see `edge-vad models backends`)")
    edgetpu_device: Optional[str] = Field(default=None, pattern=r"^(usb|pci)(:\d+)?$")
    threads: Optional[int] = Field(default=None, ge=1, description=(
        "intra-op threads of the CPU backends (onnxruntime, TFLite); default: the detected board's target profile "
        "(edge_vad/bench/targets/*.toml [runtime] threads, chosen from the measurements it names)"))
    # One setting for "the backend's numeric precision": for TensorRT the engine precision (docs/jetson.md).
    precision: Optional[Literal["fp32", "fp16", "int8"]] = Field(
        default=None, description="backend precision; TensorRT: fp32, fp16 or int8 (default: the bundle's, fp16)")


class Config(_Strict):
    runtime: RuntimeConfig = RuntimeConfig()
    sources: List[SourceConfig] = Field(default_factory=list)
    gate: GateConfig = GateConfig()
    fine: FineConfig = FineConfig()
    events: EventsConfig = EventsConfig()
    mqtt: MqttConfig = MqttConfig()
    http: HttpConfig = HttpConfig()

    @model_validator(mode="after")
    def _unique_source_names(self):
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        return self


# Strict-mode type errors on a quoted value: say how to spell the value instead.
_UNQUOTE_HINTS = {"bool_type": "true or false", "int_type": "the number", "float_type": "the number"}


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def config_errors(data: dict, origin: str) -> List[str]:
    """Validate a parsed TOML document; return one line per problem (empty when valid)."""
    try:
        Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p not in ("function-after",))
            value = err.get("input")
            shown = "(missing)" if err["type"] == "missing" else repr(value)
            if err["type"] == "extra_forbidden":
                lines.append(f"{origin}: {_format_loc(loc)}: unknown key (value {shown}); remove it or check its spelling")
            else:
                msg = remove_prefix(err["msg"], "Value error, ")
                if err["type"] in _UNQUOTE_HINTS and isinstance(value, str):
                    msg += f"; write {_UNQUOTE_HINTS[err['type']]} without quotes"
                lines.append(f"{origin}: {_format_loc(loc)} = {shown}: {msg}")
        return lines
    return []


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass an existing TOML file (example: deploy/edge-vad.toml)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file; pass the TOML file itself "
                          "(example: deploy/edge-vad.toml)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset {exc.start}); "
                          "TOML files must be UTF-8: re-save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror}); check its permissions") from None


PRECISIONS = ("fp32", "fp16", "int8")


def with_precision(cfg: Config, precision: Optional[str]) -> Config:
    """`cfg` with [runtime] precision set from --precision (None keeps the config's); one line for a bad value."""
    if not precision:
        return cfg
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"precision": precision})})


def load_config(path: Optional[Path]) -> Config:
    """Load and validate a config; None gives the defaults. Raises ConfigError listing every problem."""
    if path is None:
        return Config()
    data = read_toml(Path(path))
    errors = config_errors(data, str(path))
    if errors:
        raise ConfigError("\n".join(errors))
    return Config.model_validate(data)
