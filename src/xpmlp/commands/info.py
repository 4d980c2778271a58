"""``xpmlp info``: the versions, backends and devices found here, and what "auto" picks."""

from __future__ import annotations

import argparse
import platform


def configure_parser(p: argparse.ArgumentParser) -> None:
    del p  # no options


def run(args: argparse.Namespace) -> int:
    from ..backends import describe_auto_choice, get_backend
    from ..backends.cuda_probe import probe_cuda
    from .train import versions

    for name, version in versions().items():
        print(f"{name:>10}: {version}")
    print(f"{'platform':>10}: {platform.platform()}")
    print(f"{'numpy':>10} backend: {get_backend('numpy').device}")
    probe = probe_cuda()
    if probe.usable:
        print(f"{'cuda':>10} backend: usable ({probe.summary})")
    else:
        print(f"{'cuda':>10} backend: unusable: {probe.reason}")
        print(f"{'':>10}   remedy: {probe.remedy}")
    print(f"{'auto':>10}: {describe_auto_choice()}")
    return 0
