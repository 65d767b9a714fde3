"""``python -m cvx2_backbone.engine.launch TORCHRUN_ARGS``: torchrun for tools/dist_train.sh and dist_test.sh.

torchrun answers any failed worker with its own ChildFailedError traceback. When the first worker to fail ended
with status 2 (a usage error; every worker hands its one-line message to torchrun's reply file instead of printing
it) and the others did too or were stopped by torchrun, this prints that message once and exits 2; any other
failure keeps torchrun's report.
"""
from __future__ import annotations

import os
import sys
import tempfile
from typing import Sequence

from cvx2_backbone.utils.usage import EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    with tempfile.TemporaryDirectory(prefix="cvx2-launch-") as folder:
        # torchrun copies the failed worker's reply into its own reply file (and logs an error when it has none)
        os.environ.setdefault("TORCHELASTIC_ERROR_FILE", os.path.join(folder, "error.json"))
        try:
            torchrun(list(sys.argv[1:] if argv is None else argv))
        except ChildFailedError as err:
            _, first = err.get_first_failure()
            stopped_or_refused = all(f.exitcode == EXIT_USAGE or f.exitcode < 0 for f in err.failures.values())
            if first.exitcode != EXIT_USAGE or not stopped_or_refused:
                raise
            message = first.message
            print(message.get("message", "") if isinstance(message, dict) else message, file=sys.stderr)
            return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
