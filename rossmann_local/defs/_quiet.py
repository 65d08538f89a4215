"""Dagster marks the single-run backfill policy, the multi-partition mapping and sensor owners as beta
or preview. The project uses them knowingly (docs/design.md); their warnings would print on every
start of ``make day`` and ``make dev`` as if something were wrong. Imported first by ``defs``."""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
