"""The Ray Data dataset of one batch run: items → read → decode → analyse (actor pool) → store and record."""

from __future__ import annotations

from typing import TYPE_CHECKING

from picmetric_core.batch import stages
from picmetric_core.batch.jobs import BatchJob, BatchOptions
from picmetric_core.config import Settings

if TYPE_CHECKING:
    import ray.data



def build_dataset(settings: Settings, job: BatchJob, items: list[str], options: BatchOptions) -> ray.data.Dataset:
    """The lazy dataset; iterating it runs the batch.

    Reading, decoding and storing are CPU tasks of ``options.task_cpus`` each; the networks run in an
    autoscaling pool of ``options.actors`` actors, each with ``options.gpus_per_actor`` GPUs, so a GPU
    actor never decodes. Ray Data's backpressure bounds how many blocks are in flight between stages,
    so memory stays bounded whatever the number of items.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own bar from the driver
    blocks = max(1, -(-len(items) // options.batch_size))
    common = {"batch_size": options.batch_size, "num_cpus": options.task_cpus, "batch_format": "numpy"}
    dataset = ray.data.from_items([{"item": item} for item in items], override_num_blocks=blocks)
    dataset = dataset.map_batches(
        stages.read_block, fn_kwargs={"settings": settings, "job_started": job.started_at}, **common
    )
    dataset = dataset.map_batches(stages.decode_block, fn_kwargs={"settings": settings}, **common)
    dataset = dataset.map_batches(
        stages.AnalyzeActor,
        fn_constructor_kwargs={"settings": settings, "batch_size": options.batch_size},
        batch_size=options.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=options.actors[0], max_size=options.actors[1]),
        num_cpus=options.actor_cpus,
        num_gpus=options.gpus_per_actor or None,
    )
    return dataset.map_batches(stages.store_block, fn_kwargs={"settings": settings, "job_id": job.id}, **common)
