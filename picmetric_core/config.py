"""All configuration in one settings object, read from the environment and ``.env``.

The old deployment's ``.env`` (``DATABASE_URL``, ``S3_KEY``, ``S3_SECRET``, ``S3_BUCKET``,
``S3_LOCATION``, ``ExtraArgs``) keeps working unchanged; everything new is prefixed
``PICMETRIC_`` or named after the S3 setting it extends.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATA_DIR = Path.home() / ".picmetric"


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def normalise_database_url(url: str) -> str:
    """Accept Heroku-style ``postgres://`` and bare ``postgresql://`` URLs for psycopg2.

    >>> normalise_database_url("postgres://u:p@h:5432/db")
    'postgresql+psycopg2://u:p@h:5432/db'
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    environment: str = Field("development", validation_alias=_env("PICMETRIC_ENV"))
    data_dir: Path = Field(DEFAULT_DATA_DIR, validation_alias=_env("PICMETRIC_DATA_DIR"))
    models_dir: Path | None = Field(None, validation_alias=_env("PICMETRIC_MODELS_DIR"))

    # Database: SQLite under data_dir unless DATABASE_URL is set.
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))

    # Object store: a local folder under data_dir unless S3_BUCKET is set.
    s3_key: SecretStr | None = Field(None, validation_alias=_env("S3_KEY"))
    s3_secret: SecretStr | None = Field(None, validation_alias=_env("S3_SECRET"))
    s3_bucket: str | None = Field(None, validation_alias=_env("S3_BUCKET"))
    s3_location: str | None = Field(None, validation_alias=_env("S3_LOCATION"))
    s3_endpoint_url: str | None = Field(None, validation_alias=_env("S3_ENDPOINT_URL"))
    s3_region: str = Field("us-east-1", validation_alias=_env("S3_REGION"))
    s3_extra_args: dict[str, Any] = Field(
        default_factory=dict, validation_alias=_env("ExtraArgs", "S3_EXTRA_ARGS")
    )
    presign_expiry_s: int = Field(3600, validation_alias=_env("PICMETRIC_PRESIGN_EXPIRY_S"))
    store_dir: Path | None = Field(None, validation_alias=_env("PICMETRIC_STORE_DIR"))

    # Image intake limits.
    max_image_bytes: int = Field(20 * 1024 * 1024, validation_alias=_env("PICMETRIC_MAX_BYTES"))
    max_image_pixels: int = Field(50_000_000, validation_alias=_env("PICMETRIC_MAX_PIXELS"))
    url_connect_timeout_s: float = Field(5.0, validation_alias=_env("PICMETRIC_URL_CONNECT_TIMEOUT"))
    url_read_timeout_s: float = Field(15.0, validation_alias=_env("PICMETRIC_URL_READ_TIMEOUT"))
    url_max_redirects: int = Field(5, validation_alias=_env("PICMETRIC_URL_MAX_REDIRECTS"))
    allow_private_urls: bool = Field(False, validation_alias=_env("PICMETRIC_ALLOW_PRIVATE_URLS"))
    # URL fetches at once per process; more are refused (503) so they cannot take every worker thread.
    url_max_concurrent: int = Field(8, ge=1, validation_alias=_env("PICMETRIC_URL_MAX_CONCURRENT"))
    # Decoded images are downscaled to this longer side for the networks (original bytes are kept).
    analysis_max_side: int = Field(2048, ge=416, validation_alias=_env("PICMETRIC_ANALYSIS_MAX_SIDE"))

    # Infrastructure time budgets: a silent database or store costs a request this much, then a 503.
    db_connect_timeout_s: int = Field(5, ge=1, validation_alias=_env("PICMETRIC_DB_CONNECT_TIMEOUT"))
    db_statement_timeout_s: float = Field(15.0, gt=0, validation_alias=_env("PICMETRIC_DB_STATEMENT_TIMEOUT"))
    db_pool_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("PICMETRIC_DB_POOL_TIMEOUT"))
    store_budget_s: float = Field(6.0, gt=0, validation_alias=_env("PICMETRIC_STORE_BUDGET"))

    # Models.
    classifier_top_k: int = Field(5, validation_alias=_env("PICMETRIC_TOP_K"))
    # The stand-in when ResNet50's weights are absent: lite2 (more accurate), lite0 (faster). ResNet50 wins.
    classifier: Literal["lite2", "lite0"] = Field("lite2", validation_alias=_env("PICMETRIC_CLASSIFIER"))
    face_detector: str = Field("auto", validation_alias=_env("PICMETRIC_FACE_DETECTOR"))
    # A near-duplicate of a stored photo returns that photo's analysis instead of running the networks.
    skip_near_duplicates: bool = Field(False, validation_alias=_env("PICMETRIC_SKIP_NEAR_DUPLICATES"))
    # auto: embeddings searched by pgvector where the Postgres server has it, else in-process (docs/similar.md).
    similar_index: Literal["auto", "memory"] = Field("auto", validation_alias=_env("PICMETRIC_SIMILAR_INDEX"))
    # How the networks run. auto: per network, the fastest engine this machine has that passes the fidelity
    # gate (OpenVINO bfloat16 on AMX / AVX-512 bf16 CPUs, else OpenVINO float32, else Keras float32; Keras
    # float32 on a GPU). float32 / mixed_bfloat16: Keras with that dtype policy (mixed_bfloat16 pays on GPUs).
    # openvino_float32 / openvino_bfloat16: that engine for all three networks. docs/performance.md.
    precision: Literal["auto", "float32", "mixed_bfloat16", "openvino_float32", "openvino_bfloat16"] = Field(
        "auto", validation_alias=_env("PICMETRIC_PRECISION")
    )
    # YOLO's threshold and NMS compiled on the device after the network: "auto" = only on an accelerator.
    device_nms: Literal["auto", "on", "off"] = Field("auto", validation_alias=_env("PICMETRIC_DEVICE_NMS"))

    # The app: off by default (it serves 127.0.0.1 only); set to let others in with a shared password.
    app_password: SecretStr | None = Field(None, validation_alias=_env("PICMETRIC_APP_PASSWORD"))

    # API.
    api_token: SecretStr | None = Field(None, validation_alias=_env("PICMETRIC_API_TOKEN"))
    # NoDecode: a comma list in the environment is split by the validator, not parsed as JSON.
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("PICMETRIC_CORS_ORIGINS")
    )
    # The address clients reach the API at (e.g. behind a proxy), for links that are kept.
    public_base_url: str | None = Field(None, validation_alias=_env("PICMETRIC_PUBLIC_BASE_URL"))
    # Without a public base URL: take the host of kept links from the proxy's X-Forwarded-Host. Only
    # behind a proxy that sets that header itself (a client could otherwise choose its links' host).
    trust_forwarded_host: bool = Field(False, validation_alias=_env("PICMETRIC_TRUST_FORWARDED_HOST"))
    # The Live page's WebRTC ICE servers (JSON, RTCIceServer dicts, e.g. a TURN server for viewers on other
    # networks). Empty: no STUN/TURN at all, so no traffic to a public server (README, "The Live page").
    ice_servers: list[dict[str, Any]] = Field(default_factory=list, validation_alias=_env("PICMETRIC_ICE_SERVERS"))

    # Retention: `picmetric delete --retention` (run by a cron job or systemd timer) deletes analyses older than
    # this many days; unset, nothing is deleted on its own (docs/persistence.md, "Deleting").
    retention_days: int | None = Field(None, ge=1, validation_alias=_env("PICMETRIC_RETENTION_DAYS"))

    # Video files (issue #23, docs/video.md): frames sampled per second for the networks, and the limits a clip
    # must be within (checked on what the container declares before decoding, and again while decoding).
    video_sample_fps: float = Field(5.0, gt=0, le=30, validation_alias=_env("PICMETRIC_VIDEO_SAMPLE_FPS"))
    video_max_seconds: float = Field(600.0, gt=0, validation_alias=_env("PICMETRIC_VIDEO_MAX_SECONDS"))
    video_max_bytes: int = Field(500 * 1024 * 1024, ge=1, validation_alias=_env("PICMETRIC_VIDEO_MAX_BYTES"))
    video_max_pixels: int = Field(3840 * 2160, ge=1, validation_alias=_env("PICMETRIC_VIDEO_MAX_PIXELS"))
    # One deadline for a whole analysis (decode, networks, encode): a stalled source or decoder ends there.
    video_deadline_s: float = Field(900.0, gt=0, validation_alias=_env("PICMETRIC_VIDEO_DEADLINE_S"))
    # Analyses run at once in the background (each uses every core for its networks).
    video_workers: int = Field(1, ge=1, le=4, validation_alias=_env("PICMETRIC_VIDEO_WORKERS"))

    # Batch jobs: the folders and s3://bucket/prefix locations the API and the Batches page may name.
    batch_allowed_sources: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("PICMETRIC_BATCH_ALLOWED_SOURCES")
    )

    @field_validator("app_password", "retention_days", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str | None) -> str | None:
        return normalise_database_url(value) if value else None

    @field_validator("precision", "device_nms", mode="before")
    @classmethod
    def _blank_is_default(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower() if info.field_name == "device_nms" else value.strip()
            if not value:
                return cls.model_fields[info.field_name].default
        return value

    @field_validator("s3_extra_args", mode="before")
    @classmethod
    def _parse_extra_args(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("cors_origins", "batch_allowed_sources", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production" and self.s3_bucket and not self.s3_secret:
            raise ValueError("S3_BUCKET is set but S3_SECRET is not")
        return self

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'picmetric.db'}"

    @property
    def resolved_store_dir(self) -> Path:
        return self.store_dir or self.data_dir / "store"

    @property
    def uses_s3(self) -> bool:
        return bool(self.s3_bucket)

    @property
    def public_read(self) -> bool:
        return self.s3_extra_args.get("ACL") == "public-read"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings`` instead)."""
    return Settings()
