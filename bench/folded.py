"""Summarise a py-spy `--format raw` (collapsed stacks) profile: inclusive and self share per function.

    python bench/folded.py PROFILE.txt [--top 40] [--match SUBSTRING]
"""
import argparse
import collections
import re


def frames_of(stack):
    out = []
    for f in stack.split(';'):
        f = re.sub(r'\s*\((.*?):\d+\)$', lambda m: ' (' + m.group(1).rsplit('/', 1)[-1] + ')', f.strip())
        out.append(f)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('profile')
    ap.add_argument('--top', type=int, default=40)
    ap.add_argument('--match', default=None, help='only stacks containing this substring')
    a = ap.parse_args(argv)
    incl, selfc = collections.Counter(), collections.Counter()
    total = 0
    for line in open(a.profile, encoding='utf-8', errors='replace'):
        stack, _, n = line.rstrip('\n').rpartition(' ')
        if not n.isdigit():
            continue
        if a.match and a.match not in stack:
            continue
        n = int(n)
        total += n
        fr = frames_of(stack)
        for f in set(fr):
            incl[f] += n
        if fr:
            selfc[fr[-1]] += n
    print(f'total samples {total}')
    print('--- inclusive')
    for f, n in incl.most_common(a.top):
        print(f'{100.0 * n / total:6.1f}%  {f[:150]}')
    print('--- self')
    for f, n in selfc.most_common(a.top):
        print(f'{100.0 * n / total:6.1f}%  {f[:150]}')


if __name__ == '__main__':
    main()
