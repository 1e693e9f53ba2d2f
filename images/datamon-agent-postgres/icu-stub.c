/*
 * A stand-in for ICU's libicuuc.so.<ICU> in the datamon-agent-postgres image: the seven
 * converter functions Debian's libxml2 imports, none of which can open a converter.
 *
 * Why: the image's PostgreSQL builds have no ICU of their own (--without-icu), but the
 * server links libxml2 (the xml type), and Debian's libxml2 links ICU, whose libicudata
 * alone is 31 MB (12 MB compressed, a third of the image) with libstdc++ behind it.
 * libxml2 asks ICU only for an encoding that glibc's iconv does not know
 * (xmlFindCharEncodingHandler -> openIcuConverter, encoding.c): ucnv_open failing makes that
 * encoding "unsupported", and nothing else here is ever called (openIcuConverter closes no
 * converter it did not get). PostgreSQL hands libxml2 UTF-8 only (xml.c converts every
 * document from the database's encoding first and parses it as "UTF-8"), so the server's
 * XML functions behave as with the real ICU; build-images.sh checks one with an
 * encoding declaration.
 *
 * Built by rootfs.py: cc -shared -fPIC -nostdlib -DICU=<major> -Wl,-soname,libicuuc.so.<major>.
 */
#ifndef ICU
#error "build with -DICU=<the ICU major libxml2 was linked against, e.g. 72>"
#endif
#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define SYM(name) CAT(name, ICU)

typedef int UErrorCode;
enum { U_ZERO_ERROR = 0, U_FILE_ACCESS_ERROR = 4, U_UNSUPPORTED_ERROR = 16 };

static void fail(UErrorCode *err, UErrorCode code) {
    if (err != 0 && *err <= U_ZERO_ERROR)
        *err = code;
}

/* No converter data: every name is unknown. */
void *SYM(ucnv_open)(const char *name, UErrorCode *err) {
    (void)name;
    fail(err, U_FILE_ACCESS_ERROR);
    return 0;
}

void SYM(ucnv_close)(void *converter) { (void)converter; }

void SYM(ucnv_convertEx)(void *target_cnv, void *source_cnv, char **target, const char *target_limit,
                         const char **source, const char *source_limit, void *pivot_start,
                         void **pivot_source, void **pivot_target, const void *pivot_limit,
                         signed char reset, signed char flush, UErrorCode *err) {
    (void)target_cnv, (void)source_cnv, (void)target, (void)target_limit, (void)source;
    (void)source_limit, (void)pivot_start, (void)pivot_source, (void)pivot_target;
    (void)pivot_limit, (void)reset, (void)flush;
    fail(err, U_UNSUPPORTED_ERROR);
}

void SYM(ucnv_setFromUCallBack)(void *converter, void *action, const void *context,
                                void **old_action, const void **old_context, UErrorCode *err) {
    (void)converter, (void)action, (void)context, (void)old_action, (void)old_context;
    fail(err, U_UNSUPPORTED_ERROR);
}

void SYM(ucnv_setToUCallBack)(void *converter, void *action, const void *context,
                              void **old_action, const void **old_context, UErrorCode *err) {
    (void)converter, (void)action, (void)context, (void)old_action, (void)old_context;
    fail(err, U_UNSUPPORTED_ERROR);
}

/* The callbacks libxml2 takes the addresses of; never called without a converter. */
void SYM(UCNV_FROM_U_CALLBACK_STOP)(void) {}
void SYM(UCNV_TO_U_CALLBACK_STOP)(void) {}
