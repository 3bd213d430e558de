"""The cached stages, one module per notebook; data flows one way:

    data (01) ──► baselines (02) ──► generators (03) ──┬──► guidance (04)
                                                       └──► hyperldm (05)   ──► records ──► analysis (06)

Each stage is a pure function of (its config section, its inputs), cached in the artifact store under a
key that nests the keys of everything it reads and a version of its own code (`common.STAGE_VERSIONS`).
"""
