"""Time querylens against no instrumentation and the other tools.

Three pages, on SQLite (the cheapest queries, so the harshest case for any
per-query overhead): a light page (5 queries, 20 rows with joined relations),
a dashboard running 100 different queries, and a list of 100 books whose
authors load lazily (an N+1: 101 queries). Each variant (no instrumentation;
querylens recording; querylens installed but the request sampled out;
django-debug-toolbar's SQL panel, django-zeal, nplusone, django-silk when
installed) runs in its own worker process with its own settings module; the
rounds interleave the variants in a shuffled order, and the report compares
medians. Then: how querylens's cost scales with queries per request and stack
depth, the memory one buffered record takes, and the module caches' bounds.

    python testproject/dev.py bench
    python testproject/manage.py querylens_benchmark --rounds 15 --requests 20
    python testproject/manage.py querylens_benchmark --json > bench.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench.pages import PAGES
from bench.runner import BenchmarkFailed, Options, available_variants, report, run
from bench.worker import ABLATIONS, REFERENCES, VARIANTS


def _choices(allowed: tuple[str, ...]) -> Any:
    def parse(value: str) -> tuple[str, ...]:
        chosen = tuple(part.strip() for part in value.split(",") if part.strip())
        unknown = [part for part in chosen if part not in allowed]
        if unknown or not chosen:
            raise ValueError(value)
        return chosen

    parse.__name__ = "comma-separated list of " + ", ".join(allowed)
    return parse


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Time a light page, a 100-query page and a 100-row N+1 page with no "
        "instrumentation, with querylens (recording and not) and with the other tools; "
        "print medians, ratios, scaling and memory figures."
    )

    # The measured processes have their own settings; the demo's checks say
    # nothing about them.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rounds", type=_positive, default=15, help="interleaved rounds (default 15)"
        )
        parser.add_argument(
            "--requests",
            type=_positive,
            default=20,
            help="requests per page and variant in each round (default 20)",
        )
        parser.add_argument(
            "--warmup",
            type=int,
            default=100,
            help="untimed requests per page before the first round (default 100: "
            "enough to fill querylens's ring buffer, its steady state)",
        )
        parser.add_argument(
            "--seed", type=int, default=0, help="seed of the per-round shuffle (default 0)"
        )
        parser.add_argument(
            "--variants",
            type=_choices((*VARIANTS, *REFERENCES, *ABLATIONS, "querylens-alt")),
            default=None,
            help=f"comma-separated subset of {','.join(VARIANTS)} (default: all whose tool "
            "is installed; the peers come with the bench dependency group); reference "
            "variants, the least a per-query recorder costs (bench/floor.py): "
            + ", ".join(REFERENCES)
            + "; diagnostic variants, each querylens with one part switched off: "
            + ", ".join(ABLATIONS),
        )
        parser.add_argument(
            "--pages",
            type=_choices(tuple(PAGES)),
            default=tuple(PAGES),
            help=f"comma-separated subset of {','.join(PAGES)} (default all)",
        )
        parser.add_argument(
            "--scaling-rounds",
            type=int,
            default=5,
            help="rounds of the scaling section: queries per request and stack depth "
            "(default 5; 0 skips it)",
        )
        parser.add_argument(
            "--memory-requests",
            type=int,
            default=0,
            help="also measure resident memory after this many more requests per worker "
            "(e.g. 20000; default 0: skipped)",
        )
        parser.add_argument(
            "--render",
            action="store_true",
            help="also time the admin pages with full buffers of 100 and 1,000 records",
        )
        parser.add_argument(
            "--load",
            type=int,
            default=0,
            metavar="SECONDS",
            help="also run the gunicorn load test (4 workers, wrk), SECONDS per run",
        )
        parser.add_argument(
            "--full",
            action="store_true",
            help="everything: --memory-requests 20000 --render --load 10",
        )
        parser.add_argument(
            "--db",
            help="SQLite file to use (created and seeded when missing; "
            "default: a new temporary file)",
        )
        parser.add_argument(
            "--debug",
            action="store_true",
            help="run every variant with DEBUG=True (Django then logs queries itself)",
        )
        parser.add_argument(
            "--alt",
            metavar="PATH",
            help="also measure the querylens package found in PATH (a folder holding "
            "querylens/, e.g. a patched copy of the repository) as variant querylens-alt",
        )
        parser.add_argument(
            "--json", action="store_true", help="print the results as JSON, not a table"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        settings = Options(
            rounds=options["rounds"],
            requests=options["requests"],
            warmup=options["warmup"],
            seed=options["seed"],
            variants=options["variants"] or available_variants(),
            pages=options["pages"],
            db=options["db"],
            debug=options["debug"],
            alt=str(Path(options["alt"]).resolve()) if options["alt"] else None,
            scaling_rounds=options["scaling_rounds"],
            memory_requests=options["memory_requests"] or (20000 if options["full"] else 0),
            render=options["render"] or options["full"],
            load_seconds=options["load"] or (10 if options["full"] else 0),
        )
        if settings.alt:
            if not (Path(settings.alt) / "querylens" / "__init__.py").exists():
                raise CommandError(f"--alt {settings.alt}: no querylens package there")
            if "querylens-alt" not in settings.variants:
                settings.variants = (*settings.variants, "querylens-alt")
        elif "querylens-alt" in settings.variants:
            raise CommandError("the querylens-alt variant needs --alt PATH")
        # Progress goes to stderr so that --json output stays parseable.
        progress = sys.stderr if options["verbosity"] >= 1 else None
        try:
            results = run(settings, progress)
        except BenchmarkFailed as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(results, indent=2))
        else:
            self.stdout.write(report(results))
