/**
 * How many of a file's pages in the page cache are dirty (written, not yet on disk), as the kernel
 * flags them: the file is mapped read-only and touched, each page's frame found in
 * /proc/self/pagemap and its flags in /proc/kpageflags (bit 4, KPF_DIRTY). Root only (both files
 * give frame numbers and flags to root alone). python3 does the reading: node cannot map a file.
 */

import { execFileSync } from 'node:child_process';

const SCRIPT = `
import mmap, os, struct, sys
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
page = os.sysconf('SC_PAGE_SIZE')
m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
for off in range(0, size, page):
    m[off]
real = os.path.realpath(path)
start = None
with open('/proc/self/maps') as maps:
    for line in maps:
        parts = line.split()
        if len(parts) >= 6 and parts[5] == real:
            start = int(parts[0].split('-')[0], 16)
            break
if start is None:
    sys.exit('the mapping of %s is not in /proc/self/maps' % path)
dirty = 0
with open('/proc/self/pagemap', 'rb') as pm, open('/proc/kpageflags', 'rb') as kf:
    for i in range((size + page - 1) // page):
        pm.seek((start // page + i) * 8)
        entry, = struct.unpack('<Q', pm.read(8))
        if not (entry >> 63) & 1:
            continue
        kf.seek((entry & ((1 << 55) - 1)) * 8)
        flags, = struct.unpack('<Q', kf.read(8))
        dirty += (flags >> 4) & 1
print(dirty)
`;

/** Dirty page-cache pages of `path` (4 KiB each on x86-64). */
export function dirtyPages(path: string): number {
  return Number(execFileSync('python3', ['-c', SCRIPT, path], { encoding: 'utf8' }).trim());
}
