"""Command lines: argparse and printing only. ``parser`` makes ``detnorm-train``'s flags from the
option schema; each command's ``main(argv)`` returns its exit code."""
