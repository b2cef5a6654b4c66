"""The security gate: every adversarial case, the corpus and fuzzing against a live stack,
each judged by its effect on disk, processes and bytes out as well as its status.

    gate          run(run_dir, profile, progress)
    judge         the pure judge of the evidence (security.gate re-exports it)
    probe         the live stack with planted canaries, sentinels and secrets
    effects       the oracle: canaries, sentinels, markers, secret slices in answers
    types         a case and its result
    cases         service auth, grants, approvals, commands, paths, secrets, sockets
    grants        forged and misused grants
    repos         hostile git repositories
    reads         exfiltration through cwd, `--`, recursion and split secrets
    robustness    unencodable input, stalls, per-key fairness, privilege
    config_cases  configurations the stack must refuse to start with
    corpus        the public payload lists in corpus/
    fuzz          schemathesis over every service's OpenAPI; fuzz_seeds its real ids
    injection     the prompt-injection suite: a model that obeys injected instructions
                  (model_server, injection_cases), judged by its effects
"""
