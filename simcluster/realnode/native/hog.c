/* A memory hog for out-of-memory tests, shipped beside the workload server as /hog
 * (never run unless a test asks for it). Touches MIB mebibytes (argument, default 64)
 * one page at a time so the memory is really charged to the cgroup, then sleeps, so
 * only the kernel's OOM killer ends it under a lower limit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long mib = argc > 1 ? strtol(argv[1], NULL, 10) : 64;
    long page = sysconf(_SC_PAGESIZE);
    for (long i = 0; i < mib; i++) {
        char *block = malloc(1 << 20);
        if (block == NULL) {
            perror("hog: malloc");
            return 1;
        }
        for (long off = 0; off < (1 << 20); off += page) {
            block[off] = 1;
        }
    }
    printf("rtbench-hog touched %ld MiB\n", mib);
    fflush(stdout);
    for (;;) {
        pause();
    }
}
