"""The one typed config of edge-vad (TOML). Unknown keys are rejected; errors name the
file, the key path and the bad value. `deploy/edge-vad.toml` is the commented example."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_vad.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    dir: Path = Path("events")
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


class MqttConfig(_Strict):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, gt=0, lt=65536)
    prefix: str = "edge-vad"
    client_id: Optional[str] = None
    username: Optional[str] = None
    password_file: Optional[Path] = None
    keepalive_s: int = Field(default=30, ge=5)


class HttpConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8085, gt=0, lt=65536)


class RuntimeConfig(_Strict):
    bundle: Optional[Path] = Field(default=None, description="model bundle folder; default: the shipped bundle")
    backend: Optional[str] = Field(default=None, description="force a backend (see `edge-vad models backends`)")
    edgetpu_device: Optional[str] = Field(default=None, pattern=r"^(usb|pci)(:\d+)?$")
    threads: Optional[int] = Field(default=None, ge=1, description=(
        "intra-op threads of the CPU backends (onnxruntime, TFLite); default: the detected board's target profile "
        "(edge_vad/bench/targets/*.toml [runtime] threads, chosen from the measurements it names)"))


class Config(_Strict):
    runtime: RuntimeConfig = RuntimeConfig()
    sources: list[SourceConfig] = Field(default_factory=list)
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


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def config_errors(data: dict, origin: str) -> list[str]:
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
                msg = err["msg"].removeprefix("Value error, ")
                lines.append(f"{origin}: {_format_loc(loc)} = {shown}: {msg}")
        return lines
    return []


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass an existing TOML file (example: deploy/edge-vad.toml)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from None


def load_config(path: Optional[Path]) -> Config:
    """Load and validate a config; None gives the defaults. Raises ConfigError listing every problem."""
    if path is None:
        return Config()
    data = read_toml(Path(path))
    errors = config_errors(data, str(path))
    if errors:
        raise ConfigError("\n".join(errors))
    return Config.model_validate(data)
