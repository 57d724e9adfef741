"""XML-to-SQL migration pipeline on Apache Beam.

Usable as Beam's `--setup_file` so that portable-runner workers install the same packages.
"""
import os
import re

from setuptools import find_packages, setup

# One version, in pipeline/__init__.py: `python -m pipeline --version` prints it, the package metadata carries it.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pipeline', '__init__.py')) as f:
    VERSION = re.search(r"^__version__ = '([^']+)'", f.read(), re.M).group(1)

setup(
    name='xml-sql-migrate',
    version=VERSION,
    description='Apache Beam pipeline that migrates XML documents into normalized SQL tables from a JSON mapping contract',
    python_requires='>=3.9',
    packages=find_packages(include=['pipeline', 'pipeline.*', 'transforms', 'transforms.*', 'contracts', 'contracts.*']),
    package_data={'contracts': ['samples/*.json', '*.json']},
    include_package_data=True,
    install_requires=[
        'apache-beam>=2.60',
        'lxml>=5.0',
        'pyodbc>=5.0',
    ],
    extras_require={
        'test': ['pytest>=7', 'sqlglot>=25', 'hypothesis>=6', 'psutil>=5', 'jsonschema>=4'],
    },
    entry_points={'console_scripts': ['xml-migrate=pipeline.cli:main']},
)
