"""Similar photos with real photos through the real networks: near-duplicates at analysis, "more like this",
the History filter, the API, the backfill of rows stored before the feature, on SQLite and Postgres."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data
from sqlalchemy import delete, select, text

from picmetric_core.api.app import create_app
from picmetric_core.history import HistoryQuery
from picmetric_core.intake.images import decode_for
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.service import PicMetricService
from picmetric_core.similar import pgvector
from picmetric_core.similar.backfill import backfill
from picmetric_core.similar.index import SimilarityIndex
from picmetric_core.similar.signature import embedding_vector
from picmetric_core.similar.variants import VARIANTS, everything
from picmetric_core.store.database import session_factory
from picmetric_core.store.orm import AnalysisRow, SignatureRow
from picmetric_core.submission import Submission
from tests.support.photos import darknet_photo, jpeg_bytes
from tests.support.services import create_pg_database, drop_pg_database, make_settings

PEOPLE = ("person", "astronaut")
EDITS = ("resized", "cropped", "shifted_crop", "everything")


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3])


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """Twelve different photos: skimage's and Debian darknet's."""
    found = {name: _rgb(getattr(data, name)()) for name in ("chelsea", "coffee", "astronaut", "camera", "rocket")}
    for name in ("dog", "person", "eagle", "giraffe", "horses", "kite", "scream"):
        found[name] = np.asarray(Image.open(darknet_photo(f"{name}.jpg")).convert("RGB"))
    return found


@pytest.fixture(scope="module")
def other_cats(photos) -> dict[str, np.ndarray]:
    """Chelsea seen differently: mirrored, her head alone, and the left two thirds (not near-duplicates)."""
    cat = photos["chelsea"]
    height, width = cat.shape[:2]
    return {
        "mirrored": np.ascontiguousarray(cat[:, ::-1]),
        "head": np.ascontiguousarray(cat[: height * 2 // 3, width // 4 : width * 3 // 4]),
        "left": np.ascontiguousarray(cat[:, : width * 2 // 3]),
    }


@pytest.fixture(scope="module")
def settings(tmp_path_factory, empty_models_dir):
    return make_settings(tmp_path_factory.mktemp("similar"), models_dir=empty_models_dir)


@pytest.fixture(scope="module")
def service(settings, analyzer):
    service = PicMetricService(settings, analyzer)
    yield service
    service.close()


def submit(service: PicMetricService, rgb: np.ndarray, name: str) -> Submission:
    return service.submit(decode_for(service.settings, jpeg_bytes(rgb)), filename=f"{name}.jpg")


@pytest.fixture(scope="module")
def originals(service, photos) -> dict[str, Submission]:
    return {name: submit(service, rgb, name) for name, rgb in photos.items()}


@pytest.mark.slow
def test_different_photos_are_not_near_duplicates(originals):
    assert {name: s.near_duplicates for name, s in originals.items() if s.near_duplicates} == {}


@pytest.mark.slow
def test_an_edited_copy_is_reported_as_its_originals_near_duplicate_and_still_analysed(service, photos, originals):
    copy = submit(service, everything(photos["dog"]), "dog-small")  # resized, recompressed, 5 % cropped, recoloured

    assert [d.md5 for d in copy.near_duplicates] == [originals["dog"].record.md5]
    assert not copy.seen_before
    assert copy.analysis.classifications and copy.record.md5 != originals["dog"].record.md5


@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.slow
def test_edits_find_their_own_photo_and_no_other(service, photos, originals, edit):
    for name, rgb in photos.items():
        copy = submit(service, VARIANTS[edit](rgb), f"{name}-{edit}")
        own = {md5 for md5, stored in _filenames(service).items() if stored.startswith(f"{name}.") or
               stored.startswith(f"{name}-")}
        found = {d.md5 for d in copy.near_duplicates}
        assert originals[name].record.md5 in found, f"{edit} {name} was not found"
        assert found <= own, f"{edit} {name} matched another photo"


def _filenames(service: PicMetricService) -> dict[str, str]:
    page = service.history(HistoryQuery(limit=200))
    return {item.record.md5: item.record.filename or "" for item in page.items}


@pytest.fixture(scope="module")
def cats(service, other_cats, originals) -> set[str]:
    stored = {submit(service, rgb, f"cat-{name}").record.md5 for name, rgb in other_cats.items()}
    return stored | {originals["chelsea"].record.md5}


@pytest.mark.slow
def test_more_like_this_ranks_cats_above_the_dog_and_the_people(service, originals, cats):
    ranked = [photo.submission.record.md5 for photo in service.similar(originals["chelsea"].record.md5, k=12)]

    not_cats = {originals[name].record.md5 for name in ("dog", *PEOPLE)}
    cat_places = [ranked.index(md5) for md5 in cats - {originals["chelsea"].record.md5}]
    other_places = [ranked.index(md5) for md5 in not_cats if md5 in ranked]
    assert len(cat_places) == 3
    assert max(cat_places) < min(other_places, default=len(ranked))


@pytest.mark.slow
def test_similarity_scores_fall_down_the_list(service, originals, cats):
    scores = [photo.similarity for photo in service.similar(originals["chelsea"].record.md5, k=12)]
    assert len(scores) == 12
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] < scores[0] <= 1.0


@pytest.mark.slow
def test_history_filter_similar_to_lists_the_most_similar_photos(service, originals, cats):
    chelsea = originals["chelsea"].record.md5
    page = service.history(HistoryQuery(similar_to=chelsea, limit=200))
    listed = {item.record.md5 for item in page.items}

    assert cats - {chelsea} <= listed
    assert listed == {photo.submission.record.md5 for photo in service.similar(chelsea, k=48)}
    assert chelsea not in listed


@pytest.mark.slow
def test_near_duplicates_of_a_stored_photo(service, photos, originals):
    copy = submit(service, everything(photos["kite"]), "kite-again")
    assert originals["kite"].record.md5 in {d.md5 for d in service.near_duplicates(copy.record.md5)}
    assert service.near_duplicates("0" * 32) is None


@pytest.mark.slow
def test_a_setting_skips_near_duplicates_without_running_the_networks(settings, analyzer, photos, originals):
    skipping = PicMetricService(settings.model_copy(update={"skip_near_duplicates": True}), analyzer)
    try:
        copy = decode_for(settings, jpeg_bytes(VARIANTS["recompressed"](photos["eagle"])))
        result = skipping.submit(copy, filename="eagle-again.jpg")

        assert result.seen_before and (result.record.filename or "").startswith("eagle")  # the eagle or an edit
        assert originals["eagle"].record.md5 in {d.md5 for d in result.near_duplicates}
        assert skipping.get(copy.md5) is None  # nothing stored for the copy
    finally:
        skipping.close()


@pytest.mark.slow
def test_with_skipping_on_a_new_photo_is_hashed_once(settings, analyzer, monkeypatch):
    from picmetric_core.similar import phash, signature

    calls: list[int] = []
    real = phash.perceptual_hash

    def counted(rgb):
        calls.append(1)
        return real(rgb)

    monkeypatch.setattr(phash, "perceptual_hash", counted)
    monkeypatch.setattr(signature, "perceptual_hash", counted)
    skipping = PicMetricService(settings.model_copy(update={"skip_near_duplicates": True}), analyzer)
    try:
        fresh = decode_for(settings, jpeg_bytes(np.random.default_rng(7).integers(0, 256, (96, 128, 3), np.uint8)))
        result = skipping.submit(fresh, filename="noise.jpg")
    finally:
        skipping.close()
    assert not result.seen_before  # nothing like it was stored: the networks ran
    assert len(calls) == 1  # the check before the networks and the stored signature share one hash


@pytest.mark.slow
def test_api_reports_near_duplicates_and_similar_photos(service, settings, analyzer, photos, originals, cats):
    app = create_app(settings, loader=ModelLoader(settings, load=lambda _settings: analyzer))
    with TestClient(app) as client:
        copy = jpeg_bytes(everything(photos["giraffe"]), quality=75)
        created = client.post("/v1/analyses", files={"file": ("giraffe-copy.jpg", copy, "image/jpeg")})
        similar = client.get(f"/v1/analyses/{originals['chelsea'].record.md5}/similar", params={"limit": 5})
        unknown = client.get(f"/v1/analyses/{'a' * 32}/similar")
        listed = client.get("/v1/analyses", params={"similar_to": originals["chelsea"].record.md5, "limit": 3})

    assert created.status_code == 201
    found = {d["md5"] for d in created.json()["near_duplicates"]}
    assert originals["giraffe"].record.md5 in found  # with the giraffe's edited copies stored by the tests above
    assert {name.split("-")[0].split(".")[0] for md5, name in _filenames(service).items() if md5 in found} == {
        "giraffe"
    }
    assert similar.status_code == 200
    items = similar.json()["items"]
    assert len(items) == 5 and all(item["filename"].startswith(("chelsea-", "cat-")) for item in items)
    assert all(set(item) >= {"md5", "similarity", "filename", "created_at", "urls"} for item in items)
    assert unknown.status_code == 404 and "error" in unknown.json()
    assert listed.status_code == 200 and len(listed.json()["items"]) == 3


@pytest.mark.slow
def test_batches_give_the_same_signatures_as_single_images(analyzer, photos):
    from picmetric_core.intake.images import decode_image

    images = [decode_image(jpeg_bytes(photos[name]), max_bytes=1 << 25, max_pixels=50_000_000) for name in
              ("dog", "astronaut", "chelsea")]
    batch = analyzer.analyze_many(images, batch_size=3)
    for image, batched in zip(images, batch, strict=True):
        single = analyzer.analyze(image).signature
        assert batched.signature.phash == single.phash
        cosine = float(embedding_vector(batched.signature.embedding) @ embedding_vector(single.embedding))
        assert cosine > 0.999


@pytest.mark.slow
def test_postgres_index_keeps_in_step_and_backfill_indexes_old_rows(tmp_path, fresh_pg_url, analyzer, photos):
    settings = make_settings(tmp_path, database_url=fresh_pg_url)
    writer, reader = PicMetricService(settings, analyzer), PicMetricService(settings, analyzer)
    try:
        dog = submit(writer, photos["dog"], "dog")
        horses = submit(writer, photos["horses"], "horses")
        assert [p.submission.record.md5 for p in reader.similar(dog.record.md5)] == [horses.record.md5]

        eagle = submit(writer, photos["eagle"], "eagle")  # stored by another process: the reader catches up
        assert eagle.record.md5 in {p.submission.record.md5 for p in reader.similar(dog.record.md5)}

        sessions = session_factory(writer.engine)
        before = {n.md5: n.similarity for n in SimilarityIndex(sessions).similar(dog.record.md5)}
        with sessions.begin() as session:  # as if analysed before similar photos were indexed
            dog_id = session.scalar(select(AnalysisRow.id).where(AnalysisRow.md5 == dog.record.md5))
            session.execute(delete(SignatureRow).where(SignatureRow.analysis_id == dog_id))
        assert SimilarityIndex(sessions).similar(dog.record.md5) is None
        app = create_app(settings, loader=ModelLoader(settings, load=lambda _settings: analyzer))
        with TestClient(app) as client:
            unindexed = client.get(f"/v1/analyses/{dog.record.md5}/similar")
        assert unindexed.status_code == 409 and "backfill" in unindexed.json()["error"]

        first = backfill(sessions, writer.store, analyzer.classifier, settings, batch_size=2)
        again = backfill(sessions, writer.store, analyzer.classifier, settings)

        assert (first.indexed, first.failed, first.remaining) == (1, 0, 0)
        assert again.indexed == 0
        after = {n.md5: n.similarity for n in SimilarityIndex(sessions).similar(dog.record.md5)}
        assert after.keys() == before.keys()
        assert all(abs(after[md5] - before[md5]) < 0.01 for md5 in before)
    finally:
        writer.close()
        reader.close()


@pytest.mark.slow
def test_pgvector_finds_what_the_in_process_index_finds(
    tmp_path, fresh_pg_url, analyzer, photos, other_cats, monkeypatch
):
    monkeypatch.setattr(pgvector, "INLINE_INDEX_MAX", 0)  # as on a large database: searches scan until the backfill
    service = PicMetricService(make_settings(tmp_path, database_url=fresh_pg_url), analyzer)
    try:
        # bootstrap.sh test builds pgvector into the test server, so "auto" must find it there.
        assert service.similarity_backend == "pgvector"
        stored = {name: submit(service, rgb, name) for name, rgb in photos.items()}
        stored |= {f"chelsea {how}": submit(service, rgb, f"chelsea-{how}") for how, rgb in other_cats.items()}
        edited = submit(service, everything(photos["coffee"]), "coffee-edited")

        assert [duplicate.md5 for duplicate in edited.near_duplicates] == [stored["coffee"].record.md5]
        in_memory = SimilarityIndex(session_factory(service.engine))
        for with_hnsw in (False, True):
            if with_hnsw:
                assert not _hnsw_orders_the_rows(service.engine)  # no index yet: it scanned
                assert len(service._similarity.build_indexes()) == 1  # one classifier
                assert _hnsw_orders_the_rows(service.engine)
            for name, submission in stored.items():
                md5 = submission.record.md5
                by_pgvector = {p.submission.record.md5: p.similarity for p in service.similar(md5, k=30)}
                exact = {n.md5: n.similarity for n in in_memory.similar(md5, k=30)}
                assert by_pgvector.keys() == exact.keys(), name
                assert all(abs(by_pgvector[other] - exact[other]) < 2e-3 for other in exact), name
                assert list(by_pgvector.values()) == sorted(by_pgvector.values(), reverse=True)
        top3 = [p.submission.record.md5 for p in service.similar(stored["chelsea"].record.md5, k=3)]
        assert set(top3) == {stored[f"chelsea {how}"].record.md5 for how in other_cats}
        with service.engine.connect() as connection:
            vectors = connection.scalar(text("SELECT count(*) FROM signature_vectors"))
        assert vectors == len(stored) + 1  # every analysis's embedding, in the database
        assert in_memory.nbytes > service._similarity.nbytes  # the process keeps only the hashes
    finally:
        service.close()


def _hnsw_orders_the_rows(engine) -> bool:
    """Whether the planner can answer "more like this" from the HNSW index (pushed to: the table is tiny)."""
    with engine.begin() as connection:
        own, model, dim = connection.execute(
            text("SELECT signature_id, embedding_model, vector_dims(embedding) FROM signature_vectors")
        ).first()
        connection.execute(text("SET LOCAL enable_seqscan = off"))
        connection.execute(text("SET LOCAL enable_sort = off"))
        explain = text("EXPLAIN " + pgvector.nearest_query(dim).text)
        plan = connection.execute(explain, {"own": own, "model": model, "k": 13}).scalars()
        return any("ix_signature_vectors_hnsw" in line for line in plan)


@pytest.mark.slow
def test_where_pgvector_cannot_be_created_the_in_process_index_serves(tmp_path, pg_server_url, analyzer, photos):
    name, url = create_pg_database(pg_server_url, plain_owner=True)  # CREATE EXTENSION vector needs a superuser
    service = PicMetricService(make_settings(tmp_path, database_url=url), analyzer)
    try:
        assert service.similarity_backend == "memory"
        dog, horses = submit(service, photos["dog"], "dog"), submit(service, photos["horses"], "horses")
        assert [p.submission.record.md5 for p in service.similar(dog.record.md5)] == [horses.record.md5]
    finally:
        service.close()
        drop_pg_database(name)
