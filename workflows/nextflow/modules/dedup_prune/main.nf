// nf-core style module: glmkit dedup prune
process GLMKIT_DEDUP_PRUNE {
    tag "$meta.id"
    label 'process_medium'
    container "${ params.glmkit_container ?: 'glmkit:latest' }"

    input:
    tuple val(meta), path(shares), path(centroids), val(shard)

    output:
    tuple val(meta), path("${prefix}.prune.*.d"), emit: share
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    glmkit dedup prune ${shares} -c ${centroids} -o ${prefix}.prune.${shard.replace("/", "-of-")}.d --shard ${shard} --threads ${task.cpus} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir ${prefix}.prune.${shard.replace("/", "-of-")}.d

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """
}
