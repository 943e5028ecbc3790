"""Entry points: the ``predjoin`` command (``cli``), its options (``options``), and the job:
building and running the pipeline (``job``). ``localrun`` makes local multi-process runs start
and end quickly; nothing in the data path imports it.
"""
