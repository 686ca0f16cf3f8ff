"""Package discovery: every builder.* package, plus grammar/ shipped as builder.grammar."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["builder", "builder.*"]) + ["builder.grammar"],
    package_dir={"builder.grammar": "grammar"},
    package_data={"builder.grammar": ["*.lark"]},
)
