/* ALSA prints its errors on stderr ("ALSA lib ...") unless a handler is
 * set. The handler is variadic, which stable Rust cannot define, so this
 * shim formats the message and hands it to natter's log. */
#include <stdarg.h>
#include <stdio.h>
#include <alsa/asoundlib.h>

void natter_alsa_message(const char *msg);

static void natter_alsa_handler(const char *file, int line, const char *function,
                                int err, const char *fmt, ...) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s: ", function ? function : "alsa");
    if (n < 0 || (size_t)n >= sizeof buf) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    (void)file;
    (void)line;
    (void)err;
    natter_alsa_message(buf);
}

void natter_alsa_quiet(void) { snd_lib_error_set_handler(natter_alsa_handler); }
