/* The pod sandbox's process (the "pause" container): it holds the pod's namespaces
 * and does nothing else. Waits in pause(), reaps any child re-parented to it (it is
 * PID 1 of the pod when the PID namespace is shared), exits 0 on SIGTERM or SIGINT.
 * Built static so the image needs no libc. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction act = {0};
    act.sa_handler = on_stop;
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);
    act.sa_handler = on_child;
    act.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &act, NULL);
    for (;;) {
        pause();
    }
}
