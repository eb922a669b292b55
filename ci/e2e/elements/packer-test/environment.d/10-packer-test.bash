export PACKER_TEST_GREETING=hello-from-environment-d
