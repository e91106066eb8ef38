"""lagscaler's demo and test tooling, shipped apart from the service (``pip install -e ./demo``).

None of this runs in a cluster: a real KRaft broker from Maven Central jars (:mod:`.localkafka`), a
consumer pool, trace producer and local HPA loop standing in for Kubernetes (:mod:`.playground`), a
kube-apiserver stand-in for faults the real one cannot produce (:mod:`.standin`) and the PKI around it
(:mod:`.harness`), topic seeding (:mod:`.seed`), and the ``lagscaler demo`` and ``lagscaler broker``
commands (:mod:`.cli`), which the ``lagscaler`` command finds through the ``lagscaler.commands``
entry-point group. The service image and a plain ``pip install lagscaler`` carry none of it.
"""
