/* The pod sandbox process containerd needs (it has no pod without one; Reef pins namespaces instead). Built by
 * bench/cri.sh because no registry is reachable: PID 1 of the pod, asleep until SIGTERM or SIGINT, reaping
 * whatever is reparented to it. */
#include <signal.h>
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
  struct sigaction a = {0};
  a.sa_handler = on_stop;
  sigaction(SIGTERM, &a, NULL);
  sigaction(SIGINT, &a, NULL);
  a.sa_handler = on_child;
  a.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  sigaction(SIGCHLD, &a, NULL);
  for (;;) pause();
}
