"""Helpers every room may use, none of which imports another room of the package: the command-line error style
(:mod:`.usage`), whole-or-nothing files (:mod:`.files`), import hooks, shipped resources, pictures, this machine's
identity, and torch's allow-list for mmengine checkpoints. Nothing is imported here (most of it needs no torch)."""
