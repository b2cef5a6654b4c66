"""The soak gate: open-loop traffic for hours, judged per window.

    gate       run(run_dir, profile, progress) and judge(run_dir)
    loadgen    the open-loop generator (HDR histograms per route and window)
    load_rows  the metrics CSV's columns and rows
    verdict    the pure judge of those rows, beside its thresholds
    stats      Theil-Sen, Mann-Kendall, Wilson: the statistics the judge uses
    report     the HTML report with its plots
"""
