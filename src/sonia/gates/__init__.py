"""The release gates, as families.

    catalog       which gates exist, in order, and the `Gate` protocol each satisfies
    registry      running a gate, its provenance and verdict files, and the one judge
                  the gate and the release step share
    waivers       release minimums and the waivers that may lower a duration or a count
    common/       evidence and verdicts, provenance, progress, process checks
    gonogo        start/stop cycles and steady health
    security/     adversarial cases, corpus and fuzzing, judged by their effects
    soak/         open-loop traffic for hours, judged per window
    durability    the restore drill against the backup schedule
    determinism   the integration suite twice with one seed
    chaos/        faults under traffic, judged by the operation history

No family imports another; what they share is in `common/` (and the stack they
run against is `sonia.testing.FreshStack`).
"""
