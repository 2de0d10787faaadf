"""Reports: availability funnel, download ledger, example figures."""
