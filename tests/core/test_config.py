"""Configuration: the old deployment's .env unchanged, URL normalisation, and the embedded defaults."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

from picmetric_core.config import Settings, normalise_database_url
from picmetric_core.store.database import create_database_engine, upgrade_schema
from picmetric_core.store.objects import LocalStore, S3Store, open_store
from tests.support.services import make_settings

REPO = Path(__file__).resolve().parents[2]
OLD_ENV_NAMES = (
    "DATABASE_URL",
    "S3_KEY",
    "S3_SECRET",
    "S3_BUCKET",
    "S3_LOCATION",
    "S3_ENDPOINT_URL",
    "ExtraArgs",
    "S3_EXTRA_ARGS",
    "PICMETRIC_DATA_DIR",
    "PICMETRIC_STORE_DIR",
)

# The reference .env from the old API's README, as deployments have it.
OLD_DOTENV = """\
FLASK_ENV='development'
FLASK_APP='PicMetric:APP'

DATABASE_URL='postgres://Username:Password@URL:5432/table'

S3_KEY = 'KEYGOESHERE'
S3_SECRET = 'SECRETGOESHERE'
S3_BUCKET = 'BUCKETGOESHERE'
S3_LOCATION = 'http://BUCKETNAME.s3.amazonaws.com/'

ExtraArgs='{"ACL": "public-read", "ContentType": "image/png", "ContentDisposition": "inline"}'
"""


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    for name in OLD_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_old_dotenv_works_unchanged(clean_environment, tmp_path):
    (tmp_path / ".env").write_text(OLD_DOTENV)
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg2://Username:Password@URL:5432/table"
    assert settings.s3_key.get_secret_value() == "KEYGOESHERE"
    assert settings.s3_secret.get_secret_value() == "SECRETGOESHERE"
    assert settings.s3_bucket == "BUCKETGOESHERE"
    assert settings.s3_location == "http://BUCKETNAME.s3.amazonaws.com/"
    assert settings.s3_extra_args == {"ACL": "public-read", "ContentType": "image/png", "ContentDisposition": "inline"}
    assert settings.uses_s3 and settings.public_read
    assert "SECRETGOESHERE" not in repr(settings)

    store = open_store(settings)
    assert isinstance(store, S3Store)
    assert store.extra_args == {"ACL": "public-read", "ContentDisposition": "inline"}  # own type per object
    assert store.url("abc/original.jpg") == "http://BUCKETNAME.s3.amazonaws.com/abc/original.jpg"


def test_environment_adds_an_endpoint_and_private_links(clean_environment):
    clean_environment.setenv("S3_BUCKET", "pics")
    clean_environment.setenv("S3_KEY", "AKIDEXAMPLE")
    clean_environment.setenv("S3_SECRET", "secret")
    clean_environment.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:8333")
    clean_environment.setenv("PICMETRIC_PRESIGN_EXPIRY_S", "600")
    store = open_store(Settings())
    assert isinstance(store, S3Store)
    assert store.url("abc/original.jpg").startswith("http://127.0.0.1:8333/pics/abc/original.jpg?")
    assert "X-Amz-Expires=600" in store.url("abc/original.jpg")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db.example.com:5432/pics", "postgresql+psycopg2://u:p@db.example.com:5432/pics"),
        ("postgresql://u@localhost/pics", "postgresql+psycopg2://u@localhost/pics"),
        ("postgresql+psycopg2://u@localhost/pics", "postgresql+psycopg2://u@localhost/pics"),
        ("sqlite:////var/lib/picmetric.db", "sqlite:////var/lib/picmetric.db"),
    ],
)
def test_database_urls_are_normalised(given, expected, clean_environment):
    assert normalise_database_url(given) == expected
    clean_environment.setenv("DATABASE_URL", given)
    assert Settings(_env_file=None).resolved_database_url == expected


def test_a_heroku_style_url_reaches_postgres(pg_url, tmp_path):
    heroku_style = pg_url.replace("postgresql+psycopg2://", "postgres://")
    engine = create_database_engine(make_settings(tmp_path, database_url=heroku_style))
    upgrade_schema(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT current_setting('TimeZone')")).scalar_one() == "UTC"
    engine.dispose()


def test_defaults_are_sqlite_and_a_folder_under_the_data_dir(tmp_path):
    settings = make_settings(tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'picmetric.db'}"
    assert isinstance(open_store(settings), LocalStore)
    assert not settings.uses_s3


def test_no_environment_at_all_analyses_into_sqlite_and_a_folder(tmp_path):
    """A new user's first run: no .env, no variables; everything lands under ~/.picmetric."""
    script = textwrap.dedent(
        """
        import io
        from PIL import Image
        from picmetric_core.config import Settings
        from picmetric_core.intake.images import decode_image
        from picmetric_core.results import Analysis
        from picmetric_core.service import PicMetricService

        class Blank:
            def analyze(self, image, on_stage=None):
                return Analysis(image.md5, image.width, image.height, (), (), (), ())

        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), "orange").save(buffer, format="PNG")
        image = decode_image(buffer.getvalue(), max_bytes=10**6, max_pixels=10**6)
        service = PicMetricService(Settings(), Blank())
        first = service.submit(image, filename="orange.png")
        again = service.submit(image)
        print(service.settings.resolved_database_url, first.seen_before, again.seen_before)
        """
    )
    home = tmp_path / "home"
    home.mkdir()
    environment = {"HOME": str(home), "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=home, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data_dir = home / ".picmetric"
    assert result.stdout.split() == [f"sqlite:///{data_dir / 'picmetric.db'}", "False", "True"]
    stored = sorted(path.name for path in (data_dir / "store").glob("*/*"))
    assert stored == ["analysis.json", "original.png", "thumb.jpg"]  # overlays: drawn when first asked for


def test_every_setting_is_documented():
    names = [
        field.validation_alias.choices[0]
        for field in Settings.model_fields.values()
        if field.validation_alias is not None
    ]
    example = (REPO / ".env.example").read_text()
    docs = (REPO / "docs" / "persistence.md").read_text()
    assert [name for name in names if name not in example] == []
    assert [name for name in names if f"`{name}`" not in docs] == []


def test_classifier_setting_defaults_to_lite2_and_picks_its_own_analyzer(clean_environment, monkeypatch):
    from pydantic import ValidationError

    from picmetric_core.pipeline import analyzer_key

    default = Settings(_env_file=None)
    monkeypatch.setenv("PICMETRIC_CLASSIFIER", "lite0")
    fast = Settings(_env_file=None)
    assert (default.classifier, fast.classifier) == ("lite2", "lite0")
    assert analyzer_key(default) != analyzer_key(fast)  # switching the setting never reuses the other network
    monkeypatch.setenv("PICMETRIC_CLASSIFIER", "resnet")
    with pytest.raises(ValidationError, match="lite2"):
        Settings(_env_file=None)
