"""`cvx2 extract IMAGES_OR_FOLDERS -o OUT`: one feature file (and optionally one picture) per image.

Decoding and preprocessing (``--workers`` threads, a few batches ahead), the engine (``--runtime``, see
cvx2_backbone/extraction/engine_choice.py) and writing (one thread) overlap, so the engine waits for neither JPEG
decoding nor the disk.
Every file is written to a temporary name and renamed, so an interrupt never leaves a half file;
temporary files of a run that was killed (SIGKILL, power loss) are removed when the next run starts.
Outputs that exist are kept (rerun the same command to resume) unless ``--overwrite``; the output
folder is never read as input, even when it lies inside an input folder.
Exit status: 0 all images done, 1 some inputs unreadable (listed at the end, the rest written),
2 bad arguments, unusable weights or no images found, 130 / 143 stopped by SIGINT / SIGTERM
(the files written so far are complete; rerun to continue).
"""
from __future__ import annotations

import argparse
import io
from contextlib import closing
from pathlib import Path
from typing import Any

from cvx2_backbone.cli.commands.model_options import add_model_arguments, build_extractor
from cvx2_backbone.extraction.feature_files import (FORMAT_VERSION, IMAGE_SUFFIXES, PICTURE_SUFFIX, encode_features,
                                                    find_images)
from cvx2_backbone.extraction.pipeline import BackgroundWriter, prefetched
from cvx2_backbone.utils.files import remove_stale_temporaries, write_atomic

HELP = "extract multi-scale feature maps of images into .safetensors/.npz files (and PCA pictures with --viz)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDERS",
                        help="image files, or folders searched recursively for images")
    parser.add_argument("-o", "--output", required=True, help="output folder (mirrors the input folders)")
    add_model_arguments(parser)
    parser.add_argument("--shortest-edge", type=int, default=None,
                        help="resize images so the short side has this many pixels (default: keep size)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument("--format", choices=("safetensors", "npz"), default="safetensors", help="feature file format")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="precision of the stored maps (the network's: --precision)")
    parser.add_argument("--viz", action="store_true",
                        help="also write <name>.pyramid.png: the image and every level in PCA colour")
    parser.add_argument("--viz-tile", type=int, default=256, help="long side of each tile of the --viz picture")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose outputs exist (default: skip them)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add_engine_arguments(parser)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--runtime``, ``--precision`` and ``--threads``: which engine computes the features, in what, on how many
    threads (see cvx2_backbone/extraction/engine_choice.py; the choices are its RUNTIMES and PRECISIONS, not imported:
    no torch
    for ``--help``)."""
    parser.add_argument("--runtime", choices=("auto", "torch", "onnxruntime", "openvino"), default=None,
                        help="engine: auto (the fastest whose features match PyTorch's, measured once and cached; the "
                             "default where the deploy extra is installed), torch, onnxruntime or openvino")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="precision the network computes in (bf16: fast only on CPUs with native bf16)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of the engine, whichever runs (default: torch's thread count)")
    parser.add_argument("--workers", type=int, default=2,
                        help="threads that decode and preprocess the next images while the engine runs")


def _targets(output: Path, stem: Path, args: argparse.Namespace) -> list[Path]:
    targets = [output / stem.with_name(f"{stem.name}.{args.format}")]
    if args.viz:
        targets.append(output / stem.with_name(f"{stem.name}{PICTURE_SUFFIX}"))
    return targets


def _header_size(path: Path) -> tuple[int, int]:
    """Stored (width, height) of an image, read from its header only; (0, 0) when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # any decoding failure is reported later, when the image is read
        return (0, 0)


def _same_size_groups(pictures: list) -> list[list[int]]:
    """Indices of ``pictures`` grouped by size: each image is padded only to the stride, never to a
    neighbour's size, so its features do not depend on the batch (GRN pools over the whole canvas)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, picture in enumerate(pictures):
        groups.setdefault(picture.size, []).append(index)
    return list(groups.values())


def _check_output(output: Path) -> None:
    """-o must be a folder this user can write to: refused before any image is computed."""
    from cvx2_backbone.utils.files import unwritable_reason

    if output.exists() and not output.is_dir():
        raise ValueError(f"-o {output} is a file; -o takes a folder (it mirrors the input folders), e.g. "
                         f"-o {output.with_suffix('')}_features")
    reason = unwritable_reason(output)
    if reason:
        raise ValueError(f"cannot write into -o {output}: {reason}; choose a folder you can write to")


def _check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.viz_tile < 16:
        raise ValueError(f"--viz-tile must be at least 16 pixels, got {args.viz_tile}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")


class _Job:
    """One extraction run: reads images, writes their files, keeps the tally for the summary."""

    def __init__(self, args: argparse.Namespace, extractor, output: Path, progress) -> None:
        import torch

        self.args, self.extractor, self.output, self.progress = args, extractor, output, progress
        self.dtype = getattr(torch, args.dtype)
        self.written = 0
        self.skipped: list[tuple[Path, str]] = []

    def read(self, items: list[tuple[Path, Path]]) -> tuple[list[tuple[Path, Path]], list]:
        """The readable items and their RGB images; unreadable ones are reported and tallied."""
        from cvx2_backbone.extraction.images import ImageReadError, read_image

        kept, pictures = [], []
        for source, stem in items:
            try:
                pictures.append(read_image(source))
                kept.append((source, stem))
                self._note_if_small(source, pictures[-1].size)
            except ImageReadError as err:
                self.skipped.append((source, str(err)))
                self.progress.write(f"skipped {source}: {err}")
                self.progress.update(1)
        return kept, pictures

    def _note_if_small(self, source: Path, size: tuple[int, int]) -> None:
        short = self.args.shortest_edge or min(size)
        stride = max(self.extractor.out_strides)
        if short < stride:
            self.progress.write(f"note: {source} is {size[0]}x{size[1]}, smaller than the stride {stride}: its maps "
                                "mostly describe the padding (--shortest-edge upscales small images)")

    def load(self, items: list[tuple[Path, Path]]) -> list[tuple[list, list, Any]]:
        """Decode and preprocess some images (on a prefetch thread): per same-size group, its items, pictures and
        network input."""
        kept, pictures = self.read(items)
        groups = []
        for group in _same_size_groups(pictures):
            chosen = [pictures[i] for i in group]
            groups.append(([kept[i] for i in group], chosen, self.extractor.preprocess(chosen)))
        return groups

    def infer(self, group: tuple[list, list, Any]) -> tuple:
        """Run the engine on one loaded group (on the main thread)."""
        items, pictures, batch = group
        maps, engine = self.extractor.infer(batch.pixel_values)
        return items, pictures, batch, maps, engine

    def save(self, inferred: tuple) -> None:
        """Write each image's files of one inferred group (on the writer thread)."""
        from cvx2_backbone.utils.pictures import pyramid_image

        items, pictures, batch, maps, engine = inferred
        for index, features in enumerate(self.extractor.crop_each(maps, batch)):
            source, stem = items[index]
            targets = _targets(self.output, stem, self.args)
            stored = {k: v.to("cpu", self.dtype) for k, v in features.items()}
            metadata = self.metadata(source, batch, index, engine)
            write_atomic(targets[0], encode_features(stored, metadata, self.args.format))
            if self.args.viz:
                picture = pyramid_image(pictures[index], features, self.extractor.out_strides, tile=self.args.viz_tile)
                buffer = io.BytesIO()
                picture.save(buffer, format="PNG")
                write_atomic(targets[1], buffer.getvalue())
            self.written += 1
            self.progress.update(1)

    def metadata(self, source: Path, batch, index: int, engine) -> dict[str, Any]:
        from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        extractor, args = self.extractor, self.args
        return {
            "format": FORMAT_VERSION, "source": str(source), "model": extractor.name,
            "weights": args.weights, "outputs": extractor.out_features, "strides": extractor.out_strides,
            "channels": extractor.out_channels, "input_size": list(batch.image_sizes[index]),
            "original_size": list(batch.original_sizes[index]),
            "padded_size": list(batch.pixel_values.shape[-2:]), "shortest_edge": args.shortest_edge,
            "mean": list(IMAGENET_DEFAULT_MEAN), "std": list(IMAGENET_DEFAULT_STD),
            "engine": engine.label, "precision": engine.precision_used,
        }

    def report_skipped(self) -> None:
        if self.skipped:
            print(f"skipped {len(self.skipped)} unreadable input(s):")
            for source, reason in self.skipped:
                print(f"  {source}: {reason}")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cvx2_backbone.runtimes.allocator import reuse_freed_memory
    from cvx2_backbone.utils.usage import require_device, user_input

    output = Path(args.output)
    with user_input():  # bad options, missing inputs, unusable weights
        _check_args(args)
        _check_output(output)
        device = require_device(args.device)
        images = find_images(args.inputs, exclude=output)
        if not images:
            raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {args.inputs}"
                             + (f" outside the output folder {output}" if output.is_dir() else "")
                             + f" (*{PICTURE_SUFFIX} pictures of earlier runs are never read)")
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        reuse_freed_memory()  # no page faults on every call's large activations (cvx2_backbone/runtimes/allocator.py)
        extractor = build_extractor(args, shortest_edge=args.shortest_edge, runtime=args.runtime,
                                    precision=args.precision, threads=args.threads)
    extractor.to(device)
    stale = remove_stale_temporaries(output)
    if stale:
        print(f"removed {len(stale)} temporary file(s) that an interrupted run left in {output}")
    todo = [(src, stem) for src, stem in images
            if args.overwrite or not all(t.exists() for t in _targets(output, stem, args))]
    if len(todo) < len(images):
        print(f"{len(images) - len(todo)} of {len(images)} images already have outputs in {output}: kept "
              "(--overwrite to redo them)")
    todo.sort(key=lambda item: _header_size(item[0]))  # same-size images end up in the same batch

    progress = tqdm(total=len(todo), unit="img", desc="extract")
    job = _Job(args, extractor, output, progress)
    chunks = [todo[start:start + args.batch_size] for start in range(0, len(todo), args.batch_size)]
    try:  # decoding ahead on --workers threads, the engine here, writing on a thread: the three overlap
        writer = BackgroundWriter(job.save)
        try:
            with closing(prefetched(job.load, chunks, args.workers, ahead=2 * args.workers)) as loaded:
                for groups in loaded:
                    for group in groups:
                        writer.put(job.infer(group))
        finally:
            writer.finish()  # what was computed is written (or the writer's error raised) before any report
    except KeyboardInterrupt as stop:  # SIGINT or SIGTERM (usage.Interrupted): every written file is whole
        progress.close()
        name = stop.args[0] if stop.args else "SIGINT"
        print(f"\ninterrupted by {name}: {job.written} images written to {output}, "
              f"{len(todo) - job.written - len(job.skipped)} left; run the same command again to continue")
        job.report_skipped()
        return getattr(stop, "exit_status", 130)
    progress.close()
    print(f"wrote {job.written} feature files ({args.format}) to {output}")
    job.report_skipped()
    return 1 if job.skipped else 0
