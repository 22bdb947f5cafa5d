/* The datapath benchmarks' traffic: a server and the clients that time it.
 *
 * Python's own socket loop costs more than the datapaths being compared, so
 * the timed loops are C. Each mode prints plain numbers, one per line.
 *
 *   loadgen serve PORT WORKERS        epoll server: request byte 'C' -> a 64-byte
 *                                     answer, then close (the server closes first,
 *                                     so TIME_WAIT stays off the client's ports);
 *                                     'K' -> a 64-byte answer, connection kept
 *   loadgen connect IP PORT COUNT     COUNT connections one after another: the ns
 *                                     connect() took (SYN to SYN-ACK), per line
 *   loadgen crr IP PORT SECONDS WORKERS
 *                                     WORKERS processes each opening a connection
 *                                     per request for SECONDS: "requests failures"
 *   loadgen rr IP PORT COUNT          one connection, COUNT request/answer round
 *                                     trips: ns per round trip, per line
 *   loadgen probe IP PORT SECONDS     a connection attempt every millisecond until
 *                                     one succeeds: CLOCK_MONOTONIC ns of that
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ANSWER_SIZE 64

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static struct sockaddr_in address(const char *ip, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };

	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
		fprintf(stderr, "loadgen: not an IPv4 address: %s\n", ip);
		exit(2);
	}
	return sa;
}

/* One connection: connect, ask `kind`, read the answer (and the close for 'C').
 * Returns the ns connect() took, or 0 on failure. */
static uint64_t one_request(const struct sockaddr_in *sa, int timeout_ms)
{
	char buf[ANSWER_SIZE * 2];
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
	uint64_t t0, took;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ssize_t n;

	if (fd < 0)
		return 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	t0 = now_ns();
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0) {
		close(fd);
		return 0;
	}
	took = now_ns() - t0;
	if (write(fd, "C", 1) != 1) {
		close(fd);
		return 0;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		;
	close(fd);
	return n == 0 ? (took ? took : 1) : 0;
}

static int serve(int port, int workers)
{
	int one = 1;

	signal(SIGPIPE, SIG_IGN);
	for (int w = 1; w < workers; w++)
		if (fork() == 0)
			break;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN }, events[256];
	static char answer[ANSWER_SIZE];

	memset(answer, 'a', sizeof(answer));
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 4096)) {
		perror("loadgen serve");
		return 1;
	}
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		int n = epoll_wait(ep, events, 256, -1);

		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;

			if (fd == lfd) {
				int c;

				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ev.data.fd = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			char req[64];
			ssize_t got = read(fd, req, sizeof(req));
			int keep = got > 0;

			for (ssize_t j = 0; j < got; j++) {
				if (write(fd, answer, sizeof(answer)) != sizeof(answer))
					keep = 0;
				if (req[j] == 'C')
					keep = 0;
			}
			if (!keep && !(got < 0 && errno == EAGAIN))
				close(fd);  /* also removes it from the epoll set */
		}
	}
}

static int connect_latency(const char *ip, int port, long count)
{
	struct sockaddr_in sa = address(ip, port);

	for (long i = 0; i < count; i++)
		printf("%llu\n", (unsigned long long)one_request(&sa, 1000));
	return 0;
}

static int crr(const char *ip, int port, double seconds, int workers)
{
	struct sockaddr_in sa = address(ip, port);
	int pipes[2];
	long ok = 0, failed = 0;

	if (pipe(pipes))
		return 1;
	for (int w = 0; w < workers; w++) {
		if (fork() == 0) {
			uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
			long counts[2] = { 0, 0 };

			while (now_ns() < end)
				counts[one_request(&sa, 1000) ? 0 : 1]++;
			if (write(pipes[1], counts, sizeof(counts)) != sizeof(counts))
				_exit(1);
			_exit(0);
		}
	}
	for (int w = 0; w < workers; w++) {
		long counts[2];

		if (read(pipes[0], counts, sizeof(counts)) == sizeof(counts)) {
			ok += counts[0];
			failed += counts[1];
		}
		wait(NULL);
	}
	printf("%ld %ld\n", ok, failed);
	return 0;
}

static int rr(const char *ip, int port, long count)
{
	struct sockaddr_in sa = address(ip, port);
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	char buf[ANSWER_SIZE];

	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("loadgen rr");
		return 1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (long i = 0; i < count; i++) {
		uint64_t t0 = now_ns();
		size_t got = 0;

		if (write(fd, "K", 1) != 1)
			return 1;
		while (got < ANSWER_SIZE) {
			ssize_t n = read(fd, buf, ANSWER_SIZE - got);

			if (n <= 0)
				return 1;
			got += n;
		}
		printf("%llu\n", (unsigned long long)(now_ns() - t0));
	}
	close(fd);
	return 0;
}

/* A new non-blocking connect every millisecond, up to PROBES in flight, until
 * one completes: a node with no route answers the first few attempts with
 * "unreachable" and then, rate-limited, not at all, so waiting for each
 * attempt to fail would measure the rate limit instead of the datapath. */
#define PROBES 256
static int probe(const char *ip, int port, double seconds)
{
	struct sockaddr_in sa = address(ip, port);
	uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
	struct pollfd fds[PROBES];
	int next = 0;

	for (int i = 0; i < PROBES; i++)
		fds[i] = (struct pollfd){ .fd = -1, .events = POLLOUT };
	while (now_ns() < end) {
		if (fds[next].fd >= 0)
			close(fds[next].fd);  /* the oldest attempt: given up */
		fds[next].fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		connect(fds[next].fd, (struct sockaddr *)&sa, sizeof(sa));
		next = (next + 1) % PROBES;
		if (poll(fds, PROBES, 1) <= 0)
			continue;
		for (int i = 0; i < PROBES; i++) {
			int err = 1;
			socklen_t len = sizeof(err);

			if (fds[i].fd < 0 || !(fds[i].revents & POLLOUT))
				continue;
			getsockopt(fds[i].fd, SOL_SOCKET, SO_ERROR, &err, &len);
			if (!err) {
				printf("%llu\n", (unsigned long long)now_ns());
				return 0;
			}
			close(fds[i].fd);
			fds[i].fd = -1;
		}
	}
	return 1;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "serve"))
		return serve(atoi(argv[2]), atoi(argv[3]));
	if (argc == 5 && !strcmp(argv[1], "connect"))
		return connect_latency(argv[2], atoi(argv[3]), atol(argv[4]));
	if (argc == 6 && !strcmp(argv[1], "crr"))
		return crr(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]));
	if (argc == 5 && !strcmp(argv[1], "rr"))
		return rr(argv[2], atoi(argv[3]), atol(argv[4]));
	if (argc == 5 && !strcmp(argv[1], "probe"))
		return probe(argv[2], atoi(argv[3]), atof(argv[4]));
	fprintf(stderr, "usage: see the comment at the top of loadgen.c\n");
	return 2;
}
