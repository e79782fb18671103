"""The object store: a local folder, and a real S3 server (SeaweedFS) that checks signatures."""

from __future__ import annotations

import time

import pytest
import requests
from botocore.exceptions import ClientError, EndpointConnectionError

from picmetric_core.errors import StoreUnavailable
from picmetric_core.store.objects import (
    LocalStore,
    ObjectKeys,
    ObjectNotFound,
    RetryPolicy,
    S3Store,
    content_type_of,
    open_store,
)
from tests.support.services import make_settings, s3_settings

MD5 = "4f055f233ff79efdb5fdd377b2161c45"
JPEG_BYTES = b"\xff\xd8\xff\xe0 not really a jpeg"


def test_keys_are_content_addressed_with_the_right_extension():
    keys = ObjectKeys.for_image(MD5, "image/jpeg")
    assert keys == ObjectKeys(
        original=f"{MD5}/original.jpg",
        detections=f"{MD5}/detections.png",
        faces=f"{MD5}/faces.png",
        thumbnail=f"{MD5}/thumb.jpg",
    )
    assert ObjectKeys.for_image(MD5, "image/webp").original.endswith(".webp")
    assert content_type_of(keys.original) == "image/jpeg"
    assert content_type_of(keys.detections) == "image/png"


def test_local_store_round_trip(tmp_path):
    store = LocalStore(tmp_path / "store")
    key = f"{MD5}/original.jpg"
    assert not store.exists(key)
    store.put(key, JPEG_BYTES, "image/jpeg")
    store.put(key, JPEG_BYTES, "image/jpeg")  # idempotent
    assert store.exists(key)
    assert store.get(key) == JPEG_BYTES
    assert store.url(key) is None
    assert [p.name for p in (tmp_path / "store" / MD5).iterdir()] == ["original.jpg"]  # no temp files left
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(ObjectNotFound):
        store.get(key)


@pytest.mark.parametrize("key", ["../escape.jpg", "/etc/passwd", "a//b", "", "a/./b"])
def test_local_store_refuses_keys_outside_its_folder(tmp_path, key):
    with pytest.raises(ValueError):
        LocalStore(tmp_path).put(key, b"x", "image/jpeg")


def test_open_store_defaults_to_a_folder_under_the_data_dir(tmp_path):
    store = open_store(make_settings(tmp_path))
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "store"


def test_s3_round_trip_with_content_types_and_presigned_urls(tmp_path, seaweed, bucket):
    store = open_store(s3_settings(tmp_path, seaweed, bucket, s3_extra_args={"ContentDisposition": "inline"}))
    assert isinstance(store, S3Store)
    keys = ObjectKeys.for_image(MD5, "image/jpeg")
    store.put(keys.original, JPEG_BYTES, "image/jpeg")
    store.put(keys.detections, b"\x89PNG fake", "image/png")

    client = seaweed.client()
    assert client.head_object(Bucket=bucket, Key=keys.original)["ContentType"] == "image/jpeg"
    assert client.head_object(Bucket=bucket, Key=keys.detections)["ContentType"] == "image/png"
    assert client.head_object(Bucket=bucket, Key=keys.original)["ContentDisposition"] == "inline"
    assert store.exists(keys.original)
    assert not store.exists(keys.faces)
    assert store.get(keys.original) == JPEG_BYTES
    with pytest.raises(ObjectNotFound):
        store.get(keys.faces)

    url = store.url(keys.original)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == JPEG_BYTES
    assert response.headers["Content-Type"] == "image/jpeg"

    store.delete(keys.original)
    assert not store.exists(keys.original)


def test_s3_objects_are_private_and_tampered_links_refused(tmp_path, seaweed, bucket):
    store = open_store(s3_settings(tmp_path, seaweed, bucket, presign_expiry_s=60))
    key = f"{MD5}/original.jpg"
    store.put(key, JPEG_BYTES, "image/jpeg")
    url = store.url(key)
    assert requests.get(url, timeout=10).status_code == 200

    anonymous = f"{seaweed.endpoint_url}/{bucket}/{key}"
    other_key = url.replace("original.jpg", "thumb.jpg")
    longer_life = url.replace("X-Amz-Expires=60", "X-Amz-Expires=86400")
    signature = url.rsplit("X-Amz-Signature=", 1)[1]
    forged = url.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
    for refused in (anonymous, other_key, longer_life, forged):
        assert requests.get(refused, timeout=10).status_code == 403, refused


def test_public_read_links_use_s3_location(tmp_path, seaweed, bucket):
    location = f"http://{bucket}.s3.example.com/"
    settings = s3_settings(
        tmp_path,
        seaweed,
        bucket,
        s3_location=location,
        # The old deployment's ExtraArgs, ContentType "image/png" for every object included.
        s3_extra_args={"ACL": "public-read", "ContentType": "image/png", "ContentDisposition": "inline"},
    )
    store = open_store(settings)
    key = f"{MD5}/original.jpg"
    store.put(key, JPEG_BYTES, "image/jpeg")
    assert store.url(key) == f"{location}{key}"
    assert seaweed.client().head_object(Bucket=bucket, Key=key)["ContentType"] == "image/jpeg"


def test_wrong_secret_is_a_clear_error_without_the_secret(tmp_path, seaweed, bucket):
    wrong_secret = "wrong-" + seaweed.secret_key
    store = open_store(s3_settings(tmp_path, seaweed, bucket, s3_secret=wrong_secret))
    with pytest.raises(StoreUnavailable, match="S3_KEY and S3_SECRET") as caught:
        store.put(f"{MD5}/original.jpg", JPEG_BYTES, "image/jpeg")
    assert wrong_secret not in str(caught.value)
    assert seaweed.secret_key not in str(caught.value)


def test_missing_credentials_are_a_clear_error(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_store(make_settings(tmp_path, s3_bucket="pics", s3_endpoint_url="http://127.0.0.1:9"))
    for attempt in (lambda: store.url("k/original.jpg"), lambda: store.put("k/original.jpg", b"x", "image/jpeg")):
        with pytest.raises(StoreUnavailable, match=r"no credentials.*S3_KEY and S3_SECRET"):
            attempt()


def test_missing_bucket_is_a_clear_error(tmp_path, seaweed):
    store = open_store(s3_settings(tmp_path, seaweed, "picmetric-no-such-bucket"))
    with pytest.raises(StoreUnavailable, match=r"no bucket 'picmetric-no-such-bucket'.*fix S3_BUCKET"):
        store.get(f"{MD5}/original.jpg")


def test_store_that_stays_down_fails_quickly_and_clearly(tmp_path):
    settings = make_settings(
        tmp_path,
        s3_bucket="picmetric",
        s3_key="AKIDEXAMPLE",
        s3_secret="s3cr3t-value",
        s3_endpoint_url="http://127.0.0.1:9",  # the discard port: nothing listens
    )
    store = S3Store.from_settings(settings, retry=RetryPolicy(attempts=3, base_delay_s=0.05))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.put(f"{MD5}/original.jpg", JPEG_BYTES, "image/jpeg")
    message = str(caught.value)
    assert "not reachable" in message and "127.0.0.1:9" in message and "3 tries" in message
    assert "s3cr3t-value" not in message
    assert time.monotonic() - started < 10


class FlakyClient:
    """Fails the first ``failures`` calls the way a struggling S3 endpoint does, then succeeds."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    def put_object(self, **kwargs):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {}


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_transient_errors_are_retried_with_growing_backoff():
    client = FlakyClient(
        [_client_error("SlowDown", 503), EndpointConnectionError(endpoint_url="x"), _client_error("500", 500)]
    )
    sleeps: list[float] = []
    store = S3Store(client, "bucket", retry=RetryPolicy(attempts=4, base_delay_s=0.1), sleep=sleeps.append)
    store.put("k/original.jpg", b"x", "image/jpeg")
    assert client.calls == 4
    assert len(sleeps) == 3
    assert 0.05 <= sleeps[0] <= 0.1 and 0.2 <= sleeps[2] <= 0.4  # half to all of 0.1, 0.2, 0.4


def test_permanent_errors_are_not_retried():
    client = FlakyClient([_client_error("AccessDenied", 403)])
    store = S3Store(client, "bucket", sleep=lambda _: pytest.fail("should not wait"))
    with pytest.raises(StoreUnavailable, match="refused our credentials"):
        store.put("k/original.jpg", b"x", "image/jpeg")
    assert client.calls == 1
