#!/usr/bin/env python3
"""Fails when a header under include/qlty breaks the layering of docs/architecture.md.

Every header belongs to a component: the public header `X.hpp` and the private folder `X/` of a subsystem belong
together. A component may include only the components listed for it below (lower layers, or itself), another
subsystem's private folder never (the shared lower layers `support/` and `kernels/` excepted, and `mpi/` may use
`blockwise/`), and includes are written `#include <qlty/...>`. The deprecated forwarding headers in `detail/`
are not checked, and nothing may include them.

Usage: scripts/check_layers.py [repository root]
       scripts/check_layers.py --self-test    (breaks a copy of the tree three ways; each must be reported)
"""
import pathlib
import re
import shutil
import sys
import tempfile

COMPONENT = {  # first path part (a folder, or a top-level header's stem) -> component
    'error': 'base', 'version': 'base', 'support': 'support',
    'blend': 'core', 'geometry': 'core', 'kernels': 'core', 'memory': 'core',
    'zarr_types': 'zarr', 'zarr': 'zarr',
    'quilt': 'quilt', 'patch_pairs': 'quilt', 'weed': 'quilt', 'tokens': 'quilt', 'quilt25d': 'quilt25d',
    'large_quilt': 'large_quilt',
    'blockwise_types': 'blockwise', 'blockwise': 'blockwise', 'pyramid': 'pyramid',
    'model': 'model', 'mpi': 'mpi', 'qlty': 'umbrella',
}
BOTTOM = {'base', 'support'}
MAY_INCLUDE = {
    'base': {'base'},
    'support': BOTTOM,
    'core': BOTTOM | {'core'},
    'zarr': BOTTOM | {'zarr'},
    'quilt': BOTTOM | {'core', 'quilt'},
    'large_quilt': BOTTOM | {'core', 'zarr', 'quilt', 'large_quilt'},
    'blockwise': BOTTOM | {'core', 'zarr', 'blockwise'},
    'pyramid': BOTTOM | {'zarr', 'pyramid'},
    'quilt25d': BOTTOM | {'core', 'zarr', 'quilt', 'quilt25d'},
    'model': BOTTOM | {'model'},
    'mpi': BOTTOM | {'core', 'zarr', 'blockwise', 'mpi'},
    'umbrella': set(COMPONENT.values()) - {'mpi'},
}
SHARED_FOLDERS = {'support', 'kernels'}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def check(root):
    base = root / 'include' / 'qlty'
    problems = []
    for header in sorted(base.rglob('*.hpp')):
        rel = header.relative_to(base)
        if rel.parts[0] == 'detail':
            continue
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if own not in COMPONENT:
            problems.append(f'{rel}: belongs to no component (add it to scripts/check_layers.py and docs/architecture.md)')
            continue
        for quote, target in INCLUDE.findall(header.read_text()):
            if quote == '"':
                problems.append(f'{rel}: #include "{target}": write #include <qlty/...>')
                continue
            if not target.startswith('qlty/'):
                continue
            parts = pathlib.PurePosixPath(target).parts[1:]
            dst = parts[0] if len(parts) > 1 else pathlib.PurePosixPath(parts[0]).stem
            if dst == 'detail':
                problems.append(f'{rel}: includes the deprecated <{target}>')
                continue
            if dst not in COMPONENT:
                problems.append(f'{rel}: includes <{target}>, which belongs to no component')
                continue
            src_c, dst_c = COMPONENT[own], COMPONENT[dst]
            if dst_c not in MAY_INCLUDE[src_c]:
                problems.append(f'{rel}: {src_c} may not include <{target}> ({dst_c})')
            private = len(parts) > 1 and dst not in SHARED_FOLDERS
            if private and dst != own and (own, dst) != ('mpi', 'blockwise') and src_c != dst_c:
                problems.append(f'{rel}: includes <{target}>, private to <qlty/{dst}.hpp>')
    return problems


def self_test(root):
    breaks = {'blockwise/plan.hpp': '#include <qlty/large_quilt/chunk_store.hpp>',
              'kernels/cpu.hpp': '#include "../zarr.hpp"',
              'zarr/codecs.hpp': '#include <qlty/quilt.hpp>'}
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(tmp)
        shutil.copytree(root / 'include', copy / 'include')
        if check(copy):
            print('check_layers --self-test: the tree itself breaks the layers')
            return 1
        for name, line in breaks.items():
            with open(copy / 'include' / 'qlty' / name, 'a') as f:
                f.write('\n' + line + '\n')
        found = check(copy)
        missed = [n for n in breaks if not any(p.startswith(n + ':') for p in found)]
    for n in missed:
        print(f'check_layers --self-test: not reported: {breaks[n]} in {n}')
    return 1 if missed else 0


def main():
    if sys.argv[1:] == ['--self-test']:
        return self_test(pathlib.Path(__file__).resolve().parent.parent)
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
    problems = check(root)
    for p in problems:
        print(f'check_layers: {p}')
    if not problems:
        print('check_layers: include/qlty keeps its layers')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
