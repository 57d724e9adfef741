"""The sample contract (credit_app.json), its table spec (credit_app_tables.json) and a generator of documents
that fit them (generate.py)."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def resolve(name_or_path):
    """A path as it is when it exists, else the path of the sample of that name (with or without .json), else
    None."""
    if os.path.exists(name_or_path):
        return name_or_path
    for cand in (os.path.join(HERE, name_or_path), os.path.join(HERE, name_or_path + '.json')):
        if os.path.exists(cand):
            return cand
    return None
