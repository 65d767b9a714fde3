"""Fetching checkpoint files from the Hugging Face hub and from URLs, through the usual caches.

``HubDownloader`` is the default; anything with the same two methods can replace it (see
``use_downloader``), which is how the tests resolve hub references from local files.
In a distributed job ``once_per_node`` lets one process per machine download while the others
wait, then read the cache: 8 ranks do not fetch the same 2.6 GB file 8 times into one path.
"""
from __future__ import annotations

import os
import urllib.error
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Protocol, TypeVar
from urllib.parse import urlparse

from cvx2_backbone.weights.errors import HubUnavailableError

_TRUTHY = {"1", "ON", "YES", "TRUE"}
T = TypeVar("T")


class Downloader(Protocol):
    """Turns a hub file or a URL into a local path; raises FileNotFoundError when the file does not exist."""

    def hf_file(self, repo_id: str, filename: str, revision: str | None = None) -> Path: ...

    def url(self, url: str) -> Path: ...


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set now (or was when huggingface_hub was imported)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUTHY:
        return True
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def unreachable_message(what: str, reason: str) -> str:
    """The error text for a file that cannot be fetched, with the way around it."""
    return (f"cannot fetch {what}: {reason}. Download the file on a machine with internet access "
            "(for a hub repo: `hf download <repo id>`; for a URL: any browser or wget) and pass the local file "
            "or folder as checkpoint=PATH")


class HubDownloader:
    """huggingface_hub's ``hf_hub_download`` for hub files, torch.hub's cache for URLs; honours HF_HUB_OFFLINE."""

    def hf_file(self, repo_id: str, filename: str, revision: str | None = None) -> Path:
        from huggingface_hub import errors, hf_hub_download

        where = f"{filename} from the Hugging Face repo {repo_id}" + (f"@{revision}" if revision else "")
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=hub_offline()))
        except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as err:
            reason = ("offline mode is on (HF_HUB_OFFLINE) and the file is not in the local cache" if hub_offline()
                      else "the hub is unreachable and the file is not in the local cache (with no network, set "
                      "HF_HUB_OFFLINE=1: cached files are then used at once, without minutes of retries)")
            raise HubUnavailableError(unreachable_message(where, reason)) from err
        except errors.EntryNotFoundError as err:
            raise FileNotFoundError(f"{where}: no such file in the repo") from err
        except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as err:
            raise FileNotFoundError(f"{where}: the repo or revision does not exist, or it is private or gated "
                                    "(log in with `hf auth login` if you have access)") from err
        except (errors.HfHubHTTPError, OSError) as err:
            raise HubUnavailableError(unreachable_message(where, f"{type(err).__name__}: {err}; with no network, "
                                                                 "set HF_HUB_OFFLINE=1 to skip the retries")) from err

    def url(self, url: str) -> Path:
        import torch.hub

        name = os.path.basename(urlparse(url).path)
        if not name:
            raise ValueError(f"cannot tell a file name from the URL {url!r}; download it and pass the local path")
        target = Path(torch.hub.get_dir()) / "checkpoints" / name
        if target.is_file():
            return target
        if hub_offline():
            raise HubUnavailableError(unreachable_message(
                url, f"offline mode is on (HF_HUB_OFFLINE) and {target} is not cached"))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), progress=True)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise FileNotFoundError(f"{url}: the server has no such file (HTTP 404)") from err
            raise HubUnavailableError(unreachable_message(url, f"HTTP {err.code} {err.reason}")) from err
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise HubUnavailableError(unreachable_message(url, f"{type(err).__name__}: {err}")) from err
        return target


_current: list[Downloader] = [HubDownloader()]


def current_downloader() -> Downloader:
    """The downloader hub references resolve through (``HubDownloader`` unless replaced)."""
    return _current[-1]


@contextmanager
def use_downloader(downloader: Downloader) -> Iterator[Downloader]:
    """Resolve hub references and URLs through ``downloader`` inside the block (tests, mirrors, air-gapped sites)."""
    _current.append(downloader)
    try:
        yield downloader
    finally:
        _current.remove(downloader)


def _process_group_size() -> int:
    """World size of the default process group, 1 without one."""
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _is_node_leader() -> bool:
    """Local rank 0: the ``LOCAL_RANK`` the launchers (torchrun, tools/slurm_train.sh, mpirun via the tools) set,
    else the lowest global rank on this host."""
    import socket

    import torch.distributed as dist
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"]) == 0
    hosts = [None] * dist.get_world_size()
    dist.all_gather_object(hosts, socket.gethostname())
    return hosts.index(hosts[dist.get_rank()]) == dist.get_rank()


def _gather_failures(error: BaseException | None) -> list[str]:
    """Every rank's failure message (one collective, so it is also the barrier)."""
    import torch.distributed as dist
    messages = [None] * dist.get_world_size()
    dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}")
    return [f"rank {rank}: {message}" for rank, message in enumerate(messages) if message]


def once_per_node(fetch: Callable[[], T], what: str) -> T:
    """Run ``fetch`` on local rank 0 of each node first, then on the other ranks, which find it cached.

    Without a process group (or with one process) this is just ``fetch()``. Every rank must call it
    (``init_weights`` does, on all ranks); a failure on any rank is raised on all of them, so no rank
    waits forever for one that gave up. Rank 0's download must finish within the process group's timeout.
    """
    if _process_group_size() == 1:
        return fetch()
    leader = _is_node_leader()
    result, error = None, None
    for leaders_turn in (True, False):
        if leader == leaders_turn:
            try:
                result = fetch()
            except Exception as err:  # reported to every rank below
                error = err
        failures = _gather_failures(error)  # the others wait here while this turn's ranks fetch
        if failures:
            break
    if error is not None:
        raise error
    if failures:
        raise HubUnavailableError(f"{what}: another rank could not fetch it ({'; '.join(failures)})")
    return result
