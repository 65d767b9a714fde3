"""The command line: ``cvx2`` and its subcommands (:mod:`.main`, :mod:`.commands`), the entry of tools/train.py and
tools/test.py (:mod:`.train_test`) and the demo's driver (:mod:`.demo_job`). Nothing is imported here, so
``cvx2 --help`` answers without torch."""
