"""Pretrained weights in a distributed job: local rank 0 of each node downloads, the others wait and read its cache.

Four gloo processes stand for two nodes with two ranks each (``LOCAL_RANK`` 0 and 1, one cache folder per
node). The injected downloader is slow, so ranks that did not wait would all find the cache empty and download.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers.weights import small_backbone

URL = "https://dl.example.org/convnext/weights.pth"
NODES, RANKS_PER_NODE = 2, 2


class SlowNodeCache:
    """A URL downloader with one cache folder per node; every real download is logged with its node."""

    def __init__(self, source: Path, cache: Path, log: Path, node: int):
        self.source, self.cache, self.log, self.node = source, cache, log, node

    def hf_file(self, repo_id, filename, revision=None):
        raise FileNotFoundError(filename)

    def url(self, url):
        target = self.cache / Path(url).name
        if target.is_file():
            return target
        if not url.endswith(self.source.name):
            raise FileNotFoundError(f"{url}: the server has no such file (HTTP 404)")
        time.sleep(1.0)  # long enough for every rank to look into the cache while this one downloads
        with self.log.open("a") as log:
            log.write(f"{self.node}\n")
        partial = target.with_suffix(".part")
        partial.write_bytes(self.source.read_bytes())
        os.replace(partial, target)
        return target


def _rank(rank: int, world: int, folder: str) -> None:
    from cvx2_backbone import ConvNeXtV2
    from cvx2_backbone.weights import load_pretrained, use_downloader

    folder_path = Path(folder)
    node = rank // RANKS_PER_NODE
    os.environ["LOCAL_RANK"] = str(rank % RANKS_PER_NODE)
    dist.init_process_group("gloo", init_method=f"file://{folder_path / 'rendezvous'}", rank=rank, world_size=world)
    cache = folder_path / f"node{node}"
    cache.mkdir(exist_ok=True)
    downloader = SlowNodeCache(folder_path / "weights.pth", cache, folder_path / "downloads.log", node)
    outcome = {}
    try:
        reference = torch.load(folder_path / "weights.pth")
        model = ConvNeXtV2(arch=dict(depths=[1, 1, 2, 1], dims=[8, 16, 32, 64]), out_norm=False)
        dist.barrier()  # every rank asks for the weights at the same moment
        with use_downloader(downloader):
            load_pretrained(model, URL)
            outcome["loaded_right"] = all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
            try:
                load_pretrained(model, URL.replace("weights", "missing"))
            except Exception as err:  # noqa: BLE001 - the type is what the test checks
                outcome["missing"] = [type(err).__name__, str(err)]
    finally:
        (folder_path / f"rank{rank}.json").write_text(json.dumps(outcome))
        dist.destroy_process_group()


def test_one_download_per_node_and_failures_reach_every_rank(tmp_path):
    torch.save(small_backbone(seed=5).state_dict(), tmp_path / "weights.pth")
    world = NODES * RANKS_PER_NODE
    mp.start_processes(_rank, args=(world, str(tmp_path)), nprocs=world, start_method="spawn")

    downloads = (tmp_path / "downloads.log").read_text().split()
    assert sorted(downloads) == [str(node) for node in range(NODES)]  # once per node, not once per rank
    outcomes = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(world)]
    assert all(outcome["loaded_right"] for outcome in outcomes)
    for rank, outcome in enumerate(outcomes):
        kind, message = outcome["missing"]
        if rank % RANKS_PER_NODE == 0:  # the node leaders tried and got the server's answer
            assert kind == "FileNotFoundError" and "HTTP 404" in message
        else:  # the others did not try, and do not hang: they get the leaders' error
            assert kind == "HubUnavailableError" and "rank 0: FileNotFoundError" in message
