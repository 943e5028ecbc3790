"""Flex Template entry file: the launcher runs ``python flex_main.py --name=value ...``.

The Dockerfile points ``FLEX_TEMPLATE_PYTHON_PY_FILE`` here. It only hands over to the installed
``pipelines.job.main`` (what the ``predjoin`` console script runs), so the launcher
and the workers import one copy of the code: the package installed in the image. Running
``pipelines/job.py`` as a script instead would load a second copy of it as ``__main__``.

Try it in the image (DirectRunner):

    docker run --rm --entrypoint python IMAGE /template/deploy/flex_main.py \
        --manifest=/data/bp-example.manifest --output=/tmp/out/
"""

import sys

from pipelines.job import main

if __name__ == '__main__':
  sys.exit(main())
