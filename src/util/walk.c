#include "util/walk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "util/alloc.h"
#include "util/macros.h"

/* One directory on the way down. */
struct frame {
	int fd;     /* -1 while closed (more than KILN_WALK_MAX_OPEN deep) */
	char *name; /* its name in the parent (NULL for the root) */
	struct stat st;
	char **names; /* its entries, read once on the way in */
	size_t n, i;
	size_t rel_len; /* length of its rel path */
};

struct walk {
	int dirfd;
	const char *path;
	int flags;
	kiln_walk_fn fn;
	void *ud;
	dev_t dev; /* the root's file system */
	struct frame *v;
	size_t depth, cap; /* frames 0..depth-1 are on the stack */
	size_t first_open; /* frames [first_open, depth) have their fd */
	char *rel;
	size_t rel_cap;
};

/* Reads every name of the directory at fd (but "." and "..") into *ret. The
 * names are read before any of them is reported, so a callback that
 * removes or adds entries (rmtree) cannot disturb the listing. */
static int read_names(int fd, char ***ret, size_t *ret_n)
{
	int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (dup_fd < 0)
		return -errno;
	DIR *d = fdopendir(dup_fd);
	if (!d) {
		int r = -errno;
		close(dup_fd);
		return r;
	}
	char **v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = xreallocarray(v, cap, sizeof(char *));
		}
		v[n++] = xstrdup(de->d_name);
		errno = 0;
	}
	int r = errno ? -errno : 0;
	closedir(d);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static void rel_set(struct walk *w, size_t at, const char *name)
{
	size_t nl = strlen(name);
	if (at + nl + 2 > w->rel_cap) {
		w->rel_cap = (at + nl + 2) * 2;
		w->rel = xrealloc(w->rel, w->rel_cap);
	}
	w->rel[at] = '/';
	memcpy(w->rel + at + 1, name, nl + 1);
}

static int report(struct walk *w, int dirfd, const char *name, size_t rel_len,
                  const struct stat *st, size_t depth)
{
	w->rel[rel_len] = '\0';
	struct kiln_walk_entry e = {dirfd, name, w->rel, rel_len, st, depth};
	return w->fn(&e, w->ud);
}

/* Opens name under dirfd as a directory and checks it is the one lstat saw
 * (a swap between the two would otherwise lead the walk elsewhere). */
static int open_dir_at(int dirfd, const char *name, const struct stat *want)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_dev != want->st_dev || st.st_ino != want->st_ino) {
		close(fd);
		return -ESTALE;
	}
	return fd;
}

static int push(struct walk *w, int fd, const char *name, const struct stat *st, size_t rel_len)
{
	struct frame f = {fd, name ? xstrdup(name) : NULL, *st, NULL, 0, 0, rel_len};
	int r = read_names(fd, &f.names, &f.n);
	if (r < 0) {
		close(fd);
		free(f.name);
		return r;
	}
	if (w->depth == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 16;
		w->v = xreallocarray(w->v, w->cap, sizeof(*w->v));
	}
	w->v[w->depth++] = f;
	/* Bound the open fds whatever the depth: the oldest open ancestor
	 * gives its fd back, to be reopened through ".." on the way up. */
	if (w->depth - w->first_open > KILN_WALK_MAX_OPEN) {
		struct frame *old = &w->v[w->first_open++];
		close(old->fd);
		old->fd = -1;
	}
	return 0;
}

static void frame_free(struct frame *f)
{
	safe_close(f->fd);
	for (size_t i = f->i; i < f->n; i++)
		free(f->names[i]);
	free(f->names);
	free(f->name);
}

/* Leaves the top directory: its parent's fd comes back first if it was
 * given away (through "..", checked against the parent's device and inode
 * recorded on the way down), then the directory is reported in depth-first
 * order. */
static int pop(struct walk *w)
{
	struct frame *f = &w->v[w->depth - 1];
	int r = 0;
	if (w->depth > 1) {
		struct frame *parent = &w->v[w->depth - 2];
		if (parent->fd < 0) {
			int fd = open_dir_at(f->fd, "..", &parent->st);
			if (fd < 0)
				r = fd;
			else {
				parent->fd = fd;
				w->first_open = w->depth - 2;
			}
		}
	}
	safe_close(f->fd);
	f->fd = -1;
	if (r == 0 && (w->flags & KILN_WALK_DEPTH)) {
		if (w->depth > 1)
			r = report(w, w->v[w->depth - 2].fd, f->name, f->rel_len, &f->st,
			           w->depth - 1);
		else
			r = report(w, w->dirfd, w->path, 0, &f->st, 0);
	}
	frame_free(f);
	w->depth--;
	if (w->first_open > w->depth)
		w->first_open = w->depth;
	return r;
}

static int step(struct walk *w)
{
	struct frame *top = &w->v[w->depth - 1];
	_cleanup_free_ char *name = top->names[top->i];
	top->names[top->i++] = NULL;
	struct stat st;
	if (fstatat(top->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (st.st_dev != w->dev)
		return 0; /* a mount below the root: not ours to walk */
	size_t rel_len = top->rel_len + 1 + strlen(name);
	rel_set(w, top->rel_len, name);
	if (!S_ISDIR(st.st_mode))
		return report(w, top->fd, name, rel_len, &st, w->depth);
	if (!(w->flags & KILN_WALK_DEPTH)) {
		int r = report(w, top->fd, name, rel_len, &st, w->depth);
		if (r == KILN_WALK_SKIP)
			return 0;
		if (r < 0)
			return r;
	}
	int fd = open_dir_at(top->fd, name, &st);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	return push(w, fd, name, &st, rel_len);
}

static int walk_tree(struct walk *w)
{
	struct stat st;
	if (fstatat(w->dirfd, w->path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	w->dev = st.st_dev;
	if (!S_ISDIR(st.st_mode) || !(w->flags & KILN_WALK_DEPTH)) {
		int r = report(w, w->dirfd, w->path, 0, &st, 0);
		if (r != 0 || !S_ISDIR(st.st_mode))
			return r;
	}
	int fd = open_dir_at(w->dirfd, w->path, &st);
	if (fd < 0)
		return fd;
	int r = push(w, fd, NULL, &st, 0);
	while (r >= 0 && w->depth > 0) {
		struct frame *top = &w->v[w->depth - 1];
		r = top->i < top->n ? step(w) : pop(w);
	}
	return r;
}

int kiln_walk(int dirfd, const char *path, int flags, kiln_walk_fn fn, void *ud)
{
	struct walk w = {dirfd, path, flags, fn, ud, 0, NULL, 0, 0, 0, xstrdup(""), 1};
	int r = walk_tree(&w);
	while (w.depth > 0)
		frame_free(&w.v[--w.depth]);
	free(w.v);
	free(w.rel);
	return r < 0 ? r : 0;
}
