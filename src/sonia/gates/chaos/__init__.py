"""The chaos gate: faults under traffic, judged by the history of every operation.

    gate       run(run_dir, profile, progress) and judge(run_dir)
    history    the operation history and the checks on it (lost, doubled, stuck)
    evidence   the report assembled from the history and what the stack stored
    tcp_proxy  a loopback proxy that drops and delays a dependency's traffic
"""
