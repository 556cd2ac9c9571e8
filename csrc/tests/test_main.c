/* test_main.c - runs the tests of one module (or all) from test_list.h. */
#include "test.h"
#include "test_list.h"

#define XX(module, name) void test_##name(void);
TEST_LIST(XX)
#undef XX

struct test_case {
    const char *module;
    const char *name;
    void (*fn)(void);
};

static const struct test_case tests[] = {
#define XX(module, name) {#module, #name, test_##name},
    TEST_LIST(XX)
#undef XX
};

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    int ran = 0;

    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (only && strcmp(only, tests[i].module) != 0)
            continue;
        printf("%-10s %s ... ", tests[i].module, tests[i].name);
        fflush(stdout);
        tests[i].fn();
        printf("ok\n");
        ran++;
    }
    if (ran == 0) {
        fprintf(stderr, "no tests for module '%s'\n", only ? only : "");
        return 1;
    }
    printf("%d passed\n", ran);
    return 0;
}
